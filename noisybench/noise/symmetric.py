"""Symmetric noise: a flipped label moves to a uniformly drawn *other* class.

``exact`` is APL's generator (reference §3.2 A; also ALFs/JAL on CIFAR and SCE official):
``int(int(rate * N) / K)`` samples of every class are drawn without replacement and relabelled,
so the realised rate is exactly ``rate`` on MNIST and CIFAR. ``sampled`` draws each label from
``T = (1 - rate) I + rate / (K - 1)`` off the diagonal (§3.2 B: ALFs' MNIST, L_DMI); its
realised rate is binomial around ``rate``. Neither ever "flips" a label to its true class.
"""
from __future__ import annotations

import numpy as np

from noisybench.noise.base import NOISE, NoiseContext
from noisybench.registry import ConfigError


def other_class(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A uniform draw over the K - 1 classes that differ from each label."""
    return (labels + rng.integers(1, num_classes, size=labels.shape)) % num_classes


@NOISE.register("symmetric", rates="[0, 1)", fields={"variant": "exact"}, variants=("exact", "sampled"))
def symmetric(
    clean: np.ndarray, rate: float, rng: np.random.Generator, ctx: NoiseContext, variant: str = "exact"
) -> np.ndarray:
    num_classes = ctx.num_classes
    noisy = clean.copy()
    if variant == "sampled":
        chosen = np.flatnonzero(rng.random(clean.shape[0]) < rate)
    else:
        per_class = int(int(rate * clean.shape[0]) / num_classes)
        pools = [np.flatnonzero(clean == c) for c in range(num_classes)]
        short = next((c for c, pool in enumerate(pools) if pool.size < per_class), None)
        if short is not None:
            raise ConfigError(
                f"symmetric exact noise at rate {rate:g} flips {per_class} samples per class but class {short} "
                f"has {pools[short].size}; use noise.variant=sampled or a lower rate"
            )
        chosen = np.concatenate([rng.choice(pool, per_class, replace=False) for pool in pools])
    noisy[chosen] = other_class(clean[chosen], num_classes, rng)
    return noisy
