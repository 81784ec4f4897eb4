"""Per-sample terms of the softmax, each exactly as the papers' official code computes it.

A term is called as ``term(batch, w)`` and returns ``TermOut`` (see ``base``): ``w`` times its
per-sample value and ``w`` times its gradient with respect to ``log p``. For a function of ``p``
that gradient is ``p_k * dL/dp_k``; a clamp ``max(x, floor)`` has zero gradient where it bites
(the official code's ``torch.clamp``), and a detached factor (the focal weights ``(1 - p)^gamma``,
``Variable(logpt.data.exp())`` in the code) is a constant. Each term folds ``w`` into the few
[N, K] operations it needs, which keeps every loss within a small factor of
``F.cross_entropy``.

Notation: ``p = softmax(z)``, ``y`` the given label, ``K`` the number of classes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Batch, TermOut, above


def kept_mask(clamped: torch.Tensor, floor: float) -> torch.Tensor:
    """1.0 where ``clamped = max(x, floor)`` did not bite (x > floor), else 0.0.

    ``clamped - floor`` is exactly 0 where the clamp bit and positive elsewhere, so its sign is
    the gradient mask without a comparison and a select on [N, K].
    """
    return torch.sign(clamped - floor)


@dataclass(frozen=True)
class CE:
    """``-log p_y`` (log-softmax, no clamp), as ``torch.nn.CrossEntropyLoss``."""

    def __call__(self, b: Batch, w: float) -> TermOut:
        return TermOut(b.logp_y * -w, torch.full_like(b.p_y, -w))


@dataclass(frozen=True)
class ClampedCE:
    """``-log max(p_y, eps)`` (LogitClip's CE on ``clamp(softmax, eps, 1)``)."""

    eps: float

    def __call__(self, b: Batch, w: float) -> TermOut:
        kept = b.p_y > self.eps
        return TermOut(b.p_y.clamp_min(self.eps).log() * -w, kept.to(b.p_y.dtype) * -w)


@dataclass(frozen=True)
class Focal:
    """``-(1 - p_y)^gamma * log p_y`` with the weight detached."""

    gamma: float

    def __call__(self, b: Batch, w: float) -> TermOut:
        weight = (1 - b.p_y).pow(self.gamma) * -w
        return TermOut(weight * b.logp_y, weight)


@dataclass(frozen=True)
class MAE:
    """``1 - p_y`` (APL's "reduced MAE"; the full ``sum_k |p_k - e_y,k|`` is twice this)."""

    def __call__(self, b: Batch, w: float) -> TermOut:
        return TermOut((1 - b.p_y) * w, b.p_y * -w)


@dataclass(frozen=True)
class RCE:
    """``-sum_k max(p_k, eps) * log max(e_y,k, label_clamp)`` = ``c * sum_{k != y} max(p_k, eps)``
    with ``c = -log(label_clamp)`` (9.2103 for the code's 1e-4)."""

    eps: float
    label_clamp: float

    def __call__(self, b: Batch, w: float) -> TermOut:
        c = -math.log(self.label_clamp) * w
        value = (b.p.clamp_min(self.eps).sum(1) - b.p_y.clamp_min(self.eps)) * c
        return TermOut(value, above(b.p_y, self.eps) * -c, above(b.p, self.eps) * c)


@dataclass(frozen=True)
class GCE:
    """``(1 - max(p_y, eps)^q) / q``."""

    q: float
    eps: float

    def __call__(self, b: Batch, w: float) -> TermOut:
        powered = b.p_y.clamp_min(self.eps).pow(self.q)
        return TermOut((1 - powered) * (w / self.q), above(b.p_y, self.eps).pow(self.q) * -w)


@dataclass(frozen=True)
class TruncatedGCE:
    """Truncated L_q of the GCE paper: ``L_q(k)`` (constant, zero gradient) when ``p_y <= k``,
    else ``L_q(p_y) = (1 - p_y^q) / q``."""

    q: float
    k: float

    def __call__(self, b: Batch, w: float) -> TermOut:
        powered = b.p_y.pow(self.q)
        kept = b.p_y > self.k
        value = torch.where(kept, 1 - powered, 1 - self.k**self.q) * (w / self.q)
        return TermOut(value, torch.where(kept, powered * -w, 0.0))


@dataclass(frozen=True)
class NCE:
    """``(-log p_y) / (-sum_k log p_k)`` (log-softmax, no clamp)."""

    def __call__(self, b: Batch, w: float) -> TermOut:
        inverse = b.logp.sum(1).reciprocal()
        ratio = b.logp_y * inverse
        slope = inverse * w
        return TermOut(ratio * w, slope, None, -ratio * slope)


@dataclass(frozen=True)
class NFL:
    """``-(1-p_y)^g log p_y / sum_k -(1-p_k)^g log p_k``; the weights are detached in both the
    numerator and the denominator, ``log p`` is not."""

    gamma: float

    def __call__(self, b: Batch, w: float) -> TermOut:
        weight = b.focal_weights(self.gamma)
        inverse = torch.linalg.vecdot(weight, b.logp).reciprocal()  # -1 / normalizer
        weight_y = b.at_label(weight)
        ratio = weight_y * b.logp_y * inverse
        return TermOut(ratio * w, weight_y * inverse * w, weight * (ratio * inverse * -w).unsqueeze(1))


@dataclass(frozen=True)
class NGCE:
    """``(1 - P_y) / (K - sum_k P_k)`` with ``P = max(p, eps)^q``."""

    q: float
    eps: float

    def __call__(self, b: Batch, w: float) -> TermOut:
        # max(p, eps)^q = exp(q * max(log p, log eps)): an exp instead of a pow on [N, K].
        floor = math.log(self.eps) if self.eps > 0 else -math.inf
        clamped = b.logp.clamp_min(floor)
        powered = (clamped * self.q).exp_()
        powered_y = b.at_label(powered)
        inverse = (b.num_classes - powered.sum(1)).reciprocal()
        ratio = (1 - powered_y) * inverse
        if self.eps > 0:
            powered = powered.mul_(kept_mask(clamped, floor))
        slope = inverse * (self.q * w)
        return TermOut(ratio * w, -b.at_label(powered) * slope, powered * (ratio * slope).unsqueeze(1))


@dataclass(frozen=True)
class NNCE:
    """ANL's normalized negative CE: ``v_k = A + log max(p_k, m)`` with ``A = -log m``;
    ``1 - v_y / sum_k v_k``."""

    min_prob: float

    def __call__(self, b: Batch, w: float) -> TermOut:
        floor = math.log(self.min_prob)
        v = b.logp.clamp_min(floor) - floor
        kept = torch.sign(v)  # v is 0 exactly where the clamp bit
        inverse = v.sum(1).reciprocal()
        v_y = b.at_label(v)
        h_dense = kept * (v_y * inverse * inverse * w).unsqueeze(1)
        return TermOut((1 - v_y * inverse) * w, b.at_label(kept) * inverse * -w, h_dense)


@dataclass(frozen=True)
class NNFL:
    """ANL's normalized negative focal loss: with ``log p`` clamped at ``log m`` and the detached
    weights ``w_k = (1 - p^_k)^g``, ``1 - (A - L_y) / (K*A - sum_k L_k)`` where
    ``L_k = -w_k log p^_k`` and ``A = -(1 - m)^g log m``."""

    gamma: float
    min_prob: float

    def __call__(self, b: Batch, w: float) -> TermOut:
        floor = math.log(self.min_prob)
        logp = b.logp.clamp_min(floor)
        # (1 - max(p, m))^g = min((1 - p)^g, (1 - m)^g): the focal weights of p, capped.
        weight = b.focal_weights(self.gamma).clamp_max((1 - self.min_prob) ** self.gamma)
        weight_y = b.at_label(weight)
        top = -(1 - self.min_prob) ** self.gamma * floor
        inverse = (b.num_classes * top + torch.linalg.vecdot(weight, logp)).reciprocal()
        numerator = top + weight_y * b.at_label(logp)
        kept = kept_mask(logp, floor)
        kept_y = b.at_label(kept)
        h_dense = kept.mul_(weight).mul_((numerator * inverse * inverse * w).unsqueeze(1))
        return TermOut((1 - numerator * inverse) * w, kept_y * weight_y * inverse * -w, h_dense)


@dataclass(frozen=True)
class AGCE:
    """ALFs' asymmetric GCE ``((a+1)^q - (a+p_y)^q) / q`` (no clamp)."""

    a: float
    q: float

    def __call__(self, b: Batch, w: float) -> TermOut:
        shifted = self.a + b.p_y
        value = ((self.a + 1) ** self.q - shifted.pow(self.q)) * (w / self.q)
        return TermOut(value, shifted.pow(self.q - 1) * b.p_y * -w)


@dataclass(frozen=True)
class AUL:
    """ALFs' asymmetric unhinged loss ``((a-p_y)^q - (a-1)^q) / q`` (no clamp; a > 1)."""

    a: float
    q: float

    def __call__(self, b: Batch, w: float) -> TermOut:
        shifted = self.a - b.p_y
        value = (shifted.pow(self.q) - (self.a - 1) ** self.q) * (w / self.q)
        return TermOut(value, shifted.pow(self.q - 1) * b.p_y * -w)


@dataclass(frozen=True)
class AEL:
    """ALFs' asymmetric exponential loss ``exp(-p_y / a)`` (no additive constant)."""

    a: float

    def __call__(self, b: Batch, w: float) -> TermOut:
        value = torch.exp(b.p_y * (-1 / self.a))
        return TermOut(value * w, value * b.p_y * (-w / self.a))


@dataclass(frozen=True)
class AMSE:
    """JAL's asymmetric MSE ``sum_k (p_k - a e_y,k)^2``, divided by K when ``class_mean`` (the
    code's ``loss.mean()`` over the N*K entries)."""

    a: float
    class_mean: bool

    def __call__(self, b: Batch, w: float) -> TermOut:
        w = w / b.num_classes if self.class_mean else w
        squares = b.p * b.p
        p_y = b.p_y
        value = (squares.sum(1) - p_y * p_y + (p_y - self.a) ** 2) * w
        return TermOut(value, p_y * (-2 * self.a * w), squares.mul_(2 * w))


def _eps_softmax_label(b: Batch, m: float, eps: float):
    """The label entry of eps-softmax, ``max((p_y + m [y = argmax p]) / (m + 1), eps)``, and its
    derivative with respect to ``log p_y`` (the argmax is piecewise constant)."""
    hit = (b.p.argmax(1) == b.labels).to(b.p_y.dtype)
    p_eps = (b.p_y + m * hit) / (m + 1)
    slope = torch.sign(above(p_eps, eps)) * b.p_y / (m + 1)
    return p_eps.clamp_min(eps), slope


@dataclass(frozen=True)
class EpsCE:
    """CE on the eps-softmax output: ``-log max((p_y + m [y = argmax p]) / (m + 1), eps)``."""

    m: float
    eps: float

    def __call__(self, b: Batch, w: float) -> TermOut:
        clamped, slope = _eps_softmax_label(b, self.m, self.eps)
        return TermOut(clamped.log() * -w, slope / clamped * -w)


@dataclass(frozen=True)
class EpsFocal:
    """Focal loss on the eps-softmax output, the weight ``(1 - p_eps_y)^gamma`` detached."""

    m: float
    gamma: float
    eps: float

    def __call__(self, b: Batch, w: float) -> TermOut:
        clamped, slope = _eps_softmax_label(b, self.m, self.eps)
        weight = (1 - clamped).pow(self.gamma) * -w
        return TermOut(weight * clamped.log(), weight * slope / clamped)


@dataclass(frozen=True)
class TaylorCE:
    """Order-t Taylor expansion of CE around p_y = 1: ``sum_{i=1..t} (1 - p_y)^i / i``."""

    order: int

    def __call__(self, b: Batch, w: float) -> TermOut:
        rest = 1 - b.p_y
        value, slope, power = torch.zeros_like(rest), torch.zeros_like(rest), torch.ones_like(rest)
        for i in range(1, self.order + 1):
            slope += power  # d/dp_y of (1 - p_y)^i / i is -(1 - p_y)^(i - 1)
            power = power * rest
            value += power / i
        return TermOut(value * w, slope * b.p_y * -w)


@dataclass(frozen=True)
class IMAE:
    """IMAE: the value is the MAE ``sum_k |p_k - e_y,k| = 2 (1 - p_y)``; the gradient is MAE's,
    rescaled from MAE's weight ``4 p_y (1 - p_y)`` to IMAE's ``exp(T p_y) (1 - p_y)``, i.e.
    ``dL/dz = exp(T p_y) / 2 * (p - e_y)``."""

    T: float

    def __call__(self, b: Batch, w: float) -> TermOut:
        return TermOut((1 - b.p_y) * (2 * w), torch.exp(b.p_y * self.T) * (-w / 2))
