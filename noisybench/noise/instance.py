"""Instance-dependent noise: Xia et al. 2020's part-dependent (PTD) generator, reference §3.5(a).

Following ``get_instance_noisy_label`` of ``xiaoboxia/Part-dependent-label-noise``:
1. per-sample flip rate q_i ~ N(rate, norm_std²) truncated to [0, 1];
2. one random projection per true class, W ~ N(0, 1) of shape [K, D, K];
3. for x_i the raw image flattened as floats (no normalisation), A = x_i · W[y_i], A[y_i] = -inf,
   p_i = q_i · softmax(A), then p_i[y_i] += 1 - q_i;
4. the noisy label is drawn from p_i.
On raw pixels the projections are large, so softmax(A) is close to one-hot: a flipped sample
almost always goes to the one class its projection favours, and the realised rate is close to
the mean of q (slightly above ``rate`` for small rates, since truncation at 0 lifts the mean).
The projection runs in float64 (the reference uses float32) so that rounding cannot move a draw.
``rate = 0`` returns the clean labels: the truncated normal at mean 0 would still flip ~8 %.
"""
from __future__ import annotations

import logging

import numpy as np

from noisybench.noise.base import NOISE, NoiseContext
from noisybench.registry import ConfigError

# Samples per projection block: bounds the float64 copy of the images (4096 × 3072 × 8 B ≈ 100 MB).
CHUNK = 4096
# From this rate on, an image's own flip target is likelier than its true class: the noisy labels
# teach the wrong class, so no loss can learn them (the PTD papers stay below it).
UNLEARNABLE_RATE = 0.5

log = logging.getLogger("noisybench")


def _check_instance(fields: dict, dataset: str, num_classes: int) -> None:
    norm_std = fields["norm_std"]
    if isinstance(norm_std, bool) or not isinstance(norm_std, (int, float)) or not norm_std > 0:
        raise ConfigError(f"noise.norm_std={norm_std!r} is not allowed; use a positive number (PTD default 0.1)")


def _class_block_probabilities(x: np.ndarray, true_class: int, q: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """p_i = q_i softmax(x_i W_y with y masked) + (1 - q_i) e_y for a block of samples of class y."""
    logits = x @ projection
    logits[:, true_class] = -np.inf
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs *= (q / probs.sum(axis=1))[:, None]
    probs[:, true_class] += 1.0 - q
    return probs


def ptd_label_distributions(
    images: np.ndarray, clean: np.ndarray, num_classes: int, rate: float, norm_std: float, rng: np.random.Generator
) -> np.ndarray:
    """Each sample's distribution over noisy labels, float64 [N, K] (steps 1-3 above)."""
    from scipy.stats import truncnorm  # imported here: scipy.stats is slow to import

    n = clean.shape[0]
    features = images.reshape(n, -1)
    low, high = (0.0 - rate) / norm_std, (1.0 - rate) / norm_std
    q = truncnorm(low, high, loc=rate, scale=norm_std).rvs(n, random_state=rng)
    weights = rng.standard_normal((num_classes, features.shape[1], num_classes))

    probs = np.empty((n, num_classes))
    for true_class in range(num_classes):
        members = np.flatnonzero(clean == true_class)
        for start in range(0, members.size, CHUNK):
            block = members[start : start + CHUNK]
            x = features[block].astype(np.float64)
            probs[block] = _class_block_probabilities(x, true_class, q[block], weights[true_class])
    return probs


def sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One class index per row of ``probs``, by inverse CDF with one uniform per row."""
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]  # the last bin ends at exactly 1, so every uniform lands in a bin
    return (rng.random(probs.shape[0])[:, None] >= cdf).sum(axis=1)


@NOISE.register("instance", rates="[0, 1)", fields={"norm_std": 0.1}, check=_check_instance)
def instance(
    clean: np.ndarray, rate: float, rng: np.random.Generator, ctx: NoiseContext, norm_std: float = 0.1
) -> np.ndarray:
    images = ctx.images
    if images is None:
        raise ValueError("instance noise needs the training images; pass images= to make_noisy_labels")
    if images.shape[0] != clean.shape[0]:
        raise ValueError(f"instance noise got {images.shape[0]} images for {clean.shape[0]} labels")
    if rate == 0.0:
        return clean.copy()
    if rate >= UNLEARNABLE_RATE:
        log.warning("instance noise at rate %g: each image keeps its true label with probability about "
                    "%.2f and goes to the one class its features favour otherwise, so its noisy label is "
                    "mostly wrong and cannot be learned; rates below %g can be", rate, 1 - rate, UNLEARNABLE_RATE)
    probs = ptd_label_distributions(images, clean, ctx.num_classes, rate, norm_std, rng)
    return sample_rows(probs, rng)
