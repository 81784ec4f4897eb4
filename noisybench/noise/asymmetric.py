"""Class-map noise: a flipped label moves to one fixed target class (asymmetric, pairflip).

Asymmetric maps (reference §3.1; APL, ALFs, ANL, SCE agree):
  MNIST     7→1, 2→7, 5→6, 6→5, 3→8
  CIFAR-10  9→1 (truck→automobile), 2→0 (bird→airplane), 3→5, 5→3 (cat↔dog), 4→7 (deer→horse)
  CIFAR-100 inside each block of 5 consecutive indices, j → j+1, the block's last → its first

Variants of ``asymmetric``:
  ``clean_pool`` (default): for each source class s, exactly ``int(rate * n_s)`` samples drawn
      without replacement from the *clean* labels of s (SCE official, ANL/JAL method 2): no
      sample is flipped twice, so the realised rate of every mapped class is ``rate``.
  ``apl_cascade``: what APL's code does (§3.3). On CIFAR-10 it walks the map in the order
      above and draws each pool from the *current* labels, so the 5→3 step can re-flip cats
      already relabelled as dogs; true-cat noise comes out near ``rate - rate**2``. On MNIST
      and CIFAR-100 APL draws each label from the row of P (``multiclass_noisify``): a
      per-sample Bernoulli(rate) flip of every mapped class, with a binomial realised rate.

``pairflip`` maps every class i to i+1 mod K. ``exact`` flips ``int(rate * n_i)`` samples of each
class i (the class-map count rule above, proportional to the class size); ``sampled`` flips each
label with probability ``rate`` (the pair-flip T of Co-teaching).
"""
from __future__ import annotations

import numpy as np

from noisybench.noise.base import NOISE, NoiseContext
from noisybench.registry import ConfigError

# (source, target) pairs; the order is APL's walk order, which the CIFAR-10 cascade depends on.
ASYMMETRIC_MAPS: dict[str, tuple[tuple[int, int], ...]] = {
    "mnist": ((7, 1), (2, 7), (5, 6), (6, 5), (3, 8)),
    "cifar10": ((9, 1), (2, 0), (3, 5), (5, 3), (4, 7)),
    "cifar100": tuple((c, 5 * (c // 5) + (c + 1) % 5) for c in range(100)),
}
# Datasets on which APL re-flips sequentially on the current labels; elsewhere it samples from P.
APL_SEQUENTIAL = frozenset({"cifar10"})


def flip_exact(
    clean: np.ndarray, pairs: tuple[tuple[int, int], ...], rate: float, rng: np.random.Generator, cascade: bool = False
) -> np.ndarray:
    """For each (s, t) in order, relabel exactly ``int(rate * |pool of s|)`` samples of s as t.

    The pool is taken from the clean labels, or with ``cascade`` from the labels as already
    flipped by the earlier pairs (APL's CIFAR-10 loop).
    """
    noisy = clean.copy()
    for source, target in pairs:
        pool = np.flatnonzero((noisy if cascade else clean) == source)
        noisy[rng.choice(pool, int(rate * pool.size), replace=False)] = target
    return noisy


def flip_sampled(
    clean: np.ndarray, pairs: tuple[tuple[int, int], ...], rate: float, rng: np.random.Generator, num_classes: int
) -> np.ndarray:
    """Each label of a mapped class moves to its target with probability ``rate``, independently."""
    target_of = np.arange(num_classes)
    for source, target in pairs:
        target_of[source] = target
    flip = rng.random(clean.shape[0]) < rate
    return np.where(flip, target_of[clean], clean)


def _check_asymmetric(fields: dict, dataset: str, num_classes: int) -> None:
    if dataset not in ASYMMETRIC_MAPS:
        raise ConfigError(
            f"asymmetric noise has no class map for dataset {dataset}; maps exist for: {', '.join(ASYMMETRIC_MAPS)}"
        )
    needed = 1 + max(max(pair) for pair in ASYMMETRIC_MAPS[dataset])
    if needed > num_classes:
        raise ConfigError(
            f"the {dataset} asymmetric map uses {needed} classes but the dataset has {num_classes}"
        )


@NOISE.register(
    "asymmetric",
    rates="[0, 1)",
    fields={"variant": "clean_pool"},
    variants=("clean_pool", "apl_cascade"),
    check=_check_asymmetric,
)
def asymmetric(
    clean: np.ndarray, rate: float, rng: np.random.Generator, ctx: NoiseContext, variant: str = "clean_pool"
) -> np.ndarray:
    pairs = ASYMMETRIC_MAPS[ctx.dataset]
    if variant == "clean_pool":
        return flip_exact(clean, pairs, rate, rng)
    if ctx.dataset in APL_SEQUENTIAL:
        return flip_exact(clean, pairs, rate, rng, cascade=True)
    return flip_sampled(clean, pairs, rate, rng, ctx.num_classes)


@NOISE.register("pairflip", rates="[0, 1)", fields={"variant": "exact"}, variants=("exact", "sampled"))
def pairflip(
    clean: np.ndarray, rate: float, rng: np.random.Generator, ctx: NoiseContext, variant: str = "exact"
) -> np.ndarray:
    pairs = tuple((c, (c + 1) % ctx.num_classes) for c in range(ctx.num_classes))
    if variant == "sampled":
        return flip_sampled(clean, pairs, rate, rng, ctx.num_classes)
    return flip_exact(clean, pairs, rate, rng)
