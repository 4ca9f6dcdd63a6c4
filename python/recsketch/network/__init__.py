"""Learning a modular network back from its overall sketches (paper Section 4.1, Theorem 5).

``learn.py`` holds the algorithm (:func:`learn_network`, :func:`infer_tree` and the recovered
model types); ``unmixing.py`` the step that reaches below the top level of a fixed tree by
decoding the row space of all the sketches (``learn_network(..., method="unmix")``);
``separation.py`` the split of such sketches into one part per object, from sketches made with
``tuple_sampling=1`` (``learn_network(..., sampled_sketches=...)``);
``evaluate.py`` scores a recovered model against the ground truth of a teacher
(:class:`NetworkTruth`, :class:`NetworkScore`, :class:`LevelScore`).
"""

from .evaluate import LevelScore, NetworkScore, NetworkTruth
from .learn import (OUTPUT, NetworkModel, RecoveredModule, TreeEdge, depth_from_gain,
                    infer_tree, learn_network)
from .separation import ObjectSeparation, separate_objects
from .unmixing import UnmixResult, unmix

__all__ = ["learn_network", "infer_tree", "depth_from_gain", "NetworkModel", "RecoveredModule",
           "TreeEdge", "OUTPUT", "NetworkTruth", "NetworkScore", "LevelScore", "unmix",
           "UnmixResult", "separate_objects", "ObjectSeparation"]
