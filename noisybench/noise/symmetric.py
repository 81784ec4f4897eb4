"""Symmetric noise: a flipped label moves to a uniformly drawn *other* class.

``exact`` is APL's generator (reference §3.2 A; also ALFs/JAL on CIFAR and SCE official):
``int(int(rate * N) / K)`` samples of every class are drawn without replacement and relabelled,
so the realised rate is exactly ``rate`` on MNIST and CIFAR. ``sampled`` draws each label from
``T = (1 - rate) I + rate / (K - 1)`` off the diagonal (§3.2 B: ALFs' MNIST, L_DMI); its
realised rate is binomial around ``rate``. ``pair_counts`` is ANL's ``create_noisy_labels`` (§3.2 C;
also JAL/ε-softmax ``method2``): every (class i, other class j) pair gets exactly
``int(rate / (K - 1) * n_i)`` samples of class i, drawn without replacement, so every class keeps
about ``1 - rate`` of its labels whatever its size (0.7986 to 0.7996 on MNIST at 0.8), where
``exact`` flips the same count in every class and leaves a small class (MNIST's 5) with fewer
true labels than the noise brings in. None ever "flips" a label to its true class.
"""
from __future__ import annotations

import numpy as np

from noisybench.noise.base import NOISE, NoiseContext
from noisybench.registry import ConfigError


def other_class(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A uniform draw over the K - 1 classes that differ from each label."""
    return (labels + rng.integers(1, num_classes, size=labels.shape)) % num_classes


def flip_pair_counts(clean: np.ndarray, rate: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``int(rate / (K - 1) * n_i)`` samples of class i relabelled as each other class j, no sample twice."""
    noisy = clean.copy()
    others = np.arange(1, num_classes)
    for c in range(num_classes):
        pool = np.flatnonzero(clean == c)
        per_target = int(rate / (num_classes - 1) * pool.size)
        chosen = rng.choice(pool, per_target * (num_classes - 1), replace=False)
        # consecutive blocks of the draw go to classes c+1, c+2, ... (mod K): a uniform split
        noisy[chosen] = (c + np.repeat(others, per_target)) % num_classes
    return noisy


@NOISE.register("symmetric", rates="[0, 1)", fields={"variant": "exact"},
                variants=("exact", "sampled", "pair_counts"))
def symmetric(
    clean: np.ndarray, rate: float, rng: np.random.Generator, ctx: NoiseContext, variant: str = "exact"
) -> np.ndarray:
    num_classes = ctx.num_classes
    if variant == "pair_counts":
        return flip_pair_counts(clean, rate, num_classes, rng)
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
