"""``random``: labels redrawn uniformly over all K classes; ``none``: the clean labels.

``random`` is the label randomisation of the memorisation studies: each label is replaced with
probability ``rate`` by a uniform draw over *all* K classes (the draw may return the true
class), so the realised rate is about ``rate * (K - 1) / K`` and ``rate = 1`` gives fully
random labels.
"""
from __future__ import annotations

import numpy as np

from noisybench.noise.base import NOISE, NoiseContext


@NOISE.register("random", rates="[0, 1]")
def random(clean: np.ndarray, rate: float, rng: np.random.Generator, ctx: NoiseContext) -> np.ndarray:
    noisy = clean.copy()
    replaced = np.flatnonzero(rng.random(clean.shape[0]) < rate)
    noisy[replaced] = rng.integers(0, ctx.num_classes, size=replaced.size)
    return noisy


@NOISE.register("none", rates="0")
def none(clean: np.ndarray, rate: float, rng: np.random.Generator, ctx: NoiseContext) -> np.ndarray:
    return clean.copy()
