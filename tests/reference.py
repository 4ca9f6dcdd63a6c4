"""An independent, deliberately plain Python implementation of recsketch's matrix generator.

It follows the documented contract (rng.hpp, block_sparse.hpp, enc.hpp, orthogonal.hpp) and the
paper's Algorithms 1 and 2 line by line, with Python integers and NumPy, sharing no code with the
native core. Tests compare the core against it bit for bit.
"""

from __future__ import annotations

import math
from typing import Iterator, List, Tuple

import numpy as np

M64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15

STREAM_SIGNATURE, STREAM_STRING, STREAM_WALK, STREAM_ORTHO = 1, 2, 3, 4
ROLE_MODULE, ROLE_POSITION = 0x4D4F44554C45, 0x504F534954494F


def mix64(z: int) -> int:
    z &= M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def combine(a: int, b: int) -> int:
    return mix64(a ^ mix64((b + GAMMA) & M64))


def stream_state(seed: int, key: int, tag: int, column: int) -> int:
    return combine(combine(combine(seed, key), tag), column)


def stream_word(state: int, k: int) -> int:
    return mix64((state + (k + 1) * GAMMA) & M64)


def sign_bits(state: int, n: int) -> np.ndarray:
    """n signs (+1/-1) from a stream: bit r of word r // 64, set means -1."""
    out = np.empty(n, dtype=np.int8)
    for r in range(n):
        out[r] = -1 if (stream_word(state, r // 64) >> (r % 64)) & 1 else 1
    return out


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & M64
    return h


def module_key(name: str, slot: int) -> int:
    return combine(combine(ROLE_MODULE, fnv1a64(name.encode("utf-8"))), slot)


def position_key(i: int) -> int:
    return combine(ROLE_POSITION, i)


def thresholds(q: float, n_blocks: int) -> List[int]:
    """floor(2^32 (1-q)^k) for k = 1.. while positive, at most n_blocks entries.

    The gaps are drawn from 32-bit words, so a block's probability 1 - t_1 / 2^32 is a multiple
    of 2^-32: q below 2^-32 cannot be represented (and at q < ~1.1e-16, 1 - q == 1 gives
    t_1 = 2^32, which does not fit 32 bits). Such q are refused."""
    if not q >= 2.0**-32:
        raise ValueError(f"density {q!r} is below 2^-32, the resolution of the gap table")
    out, tail = [], 1.0
    for _ in range(n_blocks):
        tail *= 1.0 - q
        t = math.floor(tail * 4294967296.0)
        assert t < 2**32
        if t < 1:
            break
        out.append(t)
    return out


def column_blocks(seed: int, key: int, d: int, b: int, q: float, j: int
                  ) -> Iterator[Tuple[int, int, int, int]]:
    """(block, f_s, f_c, f_m) of the nonzero blocks of column j: the gaps of a Bernoulli(q)
    sequence drawn by inverse CDF against the threshold table."""
    n_blocks = d // b
    table = thresholds(q, n_blocks)
    state = stream_state(seed, key, STREAM_WALK, j)
    block, k = 0, 0
    while True:
        w = stream_word(state, k)
        k += 1
        u = w & 0xFFFFFFFF
        block += sum(1 for t in table if u < t)
        if block >= n_blocks:
            return
        flips = [-1 if (w >> s) & 1 else 1 for s in (32, 33, 34)]
        yield block, flips[0], flips[1], flips[2]
        block += 1


def enc(j: int, b_m: int, b_s: int, d: int, b: int) -> np.ndarray:
    """Algorithm 1 for the 0-based column j (the paper's j - 1), before the 1/sqrt(dq) scale."""
    L = math.ceil(math.log2(d)) if d > 1 else 0
    bits = [1 if (j >> (L - 1 - t)) & 1 else -1 for t in range(L)]
    pattern = [1] + bits + [b_m, b_s]
    pattern += [1] * (b // 3 - len(pattern))
    return np.array(pattern, dtype=np.int8)


def block_sparse_dense(seed: int, key: int, d: int, b: int, q: float) -> np.ndarray:
    """Algorithm 2, materialised."""
    thresholds(q, 0)  # refuses densities the gap table cannot represent
    third = b // 3
    scale = 1.0 / math.sqrt(d * q)
    sigma_m = sign_bits(stream_state(seed, key, STREAM_SIGNATURE, 0), third)
    R = np.zeros((d, d))
    for j in range(d):
        sigma_s = sign_bits(stream_state(seed, key, STREAM_STRING, j), third)
        for i, f_s, f_c, f_m in column_blocks(seed, key, d, b, q, j):
            fp_m = f_m * sigma_m[0]
            fp_s = f_s * sigma_s[0]
            block = np.concatenate([f_s * sigma_s, f_c * enc(j, fp_m, fp_s, d, b), f_m * sigma_m])
            R[i * b:(i + 1) * b, j] = block * scale
    return R


def hadamard(d: int) -> np.ndarray:
    H = np.array([[1.0]])
    while H.shape[0] < d:
        H = np.block([[H, H], [H, -H]])
    return H / math.sqrt(d)


def orthogonal_dense(seed: int, key: int, d: int) -> np.ndarray:
    """H D3 H D2 H D1 with normalised Hadamard H."""
    H = hadamard(d)
    D = [np.diag(sign_bits(stream_state(seed, key, STREAM_ORTHO, r), d).astype(float))
         for r in (1, 2, 3)]
    return H @ D[2] @ H @ D[1] @ H @ D[0]


class DenseMatrices:
    """The matrices of a Sketcher, materialised by this file's generator (not the core's)."""

    def __init__(self, family: str, d: int, seed: int, b: int = 0, q: float = 0.0):
        self.family, self.d, self.seed, self.b, self.q = family, d, seed, b, q
        self._cache: dict = {}

    def _make(self, key: int) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = (orthogonal_dense(self.seed, key, self.d)
                                if self.family == "orthogonal"
                                else block_sparse_dense(self.seed, key, self.d, self.b, self.q))
        return self._cache[key]

    def module(self, name: str, k: int) -> np.ndarray:
        return self._make(module_key(name, k))

    def position(self, i: int) -> np.ndarray:
        return self._make(position_key(i))


def reference_sketch(objects, output, mats: DenseMatrices):
    """Section 3.3 by plain recursion. ``objects``: list of (module, attributes, [(index, w)]),
    children before parents; ``output``: [(index, w)]. Returns (overall, object sketches)."""
    d = mats.d

    def half(R, v):
        return 0.5 * (v + R @ v)

    def tuple_sketch(items):
        out = np.zeros(d)
        for i, (v, w) in enumerate(items, start=1):
            out += w * half(mats.position(i), v)
        return out

    sketches = []
    for module, x, inputs in objects:
        padded = np.zeros(d)
        padded[:len(x)] = x
        e1 = np.zeros(d)
        e1[0] = 1.0
        s_attr = 0.5 * mats.module(module, 1) @ padded + 0.5 * mats.module(module, 2) @ e1
        s_input = tuple_sketch([(sketches[c], w) for c, w in inputs])
        s_obj = half(mats.module(module, 0), tuple_sketch([(s_attr, 0.5), (s_input, 0.5)]))
        sketches.append(s_obj)
    return tuple_sketch([(sketches[c], w) for c, w in output]), sketches
