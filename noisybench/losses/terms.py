"""Per-sample terms of the softmax, each exactly as the papers' official code computes it.

A term is called as ``term(batch, w)`` and adds ``w`` times its per-sample value to the batch,
and, when the batch needs the gradient, ``w`` times its gradient with respect to ``log p``
(see ``base.Batch``). For a function of ``p`` that gradient is ``p_k * dL/dp_k``; a clamp
``max(x, floor)`` has zero gradient where it bites (the official code's ``torch.clamp``), and a
detached factor (the focal weights ``(1 - p)^gamma``, ``Variable(logpt.data.exp())`` in the
code) is a constant.

At a batch of 128 x 100 each tensor op costs about as much as its dispatch, so the terms keep
their ops few: [N, 1] label entries instead of [N, K] one-hot products, in-place updates of
their own temporaries, masks from ``threshold``/``sign`` (a comparison and a ``where`` on [N, K]
cost several multiplications each), and ``exp(q * log p)`` where ``p ** q`` would need a ``pow``.

Notation: ``p = softmax(z)``, ``y`` the given label, ``K`` the number of classes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Batch


def kept(x: torch.Tensor, floor: float) -> torch.Tensor:
    """x where x > floor, else 0: x times the gradient mask of ``clamp(x, min=floor)``."""
    return torch.threshold(x, floor, 0.0) if floor > 0 else x


@dataclass(frozen=True)
class CE:
    """``-log p_y`` (log-softmax, no clamp), as ``torch.nn.CrossEntropyLoss``."""

    def __call__(self, b: Batch, w: float) -> None:
        b.add_value(b.logp_y, -w)
        b.label_const -= w


@dataclass(frozen=True)
class ClampedCE:
    """``-log max(p_y, eps)`` (LogitClip's CE on ``clamp(softmax, eps, 1)``)."""

    eps: float

    def __call__(self, b: Batch, w: float) -> None:
        b.add_value(b.p_y.clamp_min(self.eps).log_(), -w, owned=True)
        if b.need_grad:
            b.add_label(kept(b.p_y, self.eps).sign_(), -w, owned=True)


@dataclass(frozen=True)
class Focal:
    """``-(1 - p_y)^gamma * log p_y`` with the weight detached."""

    gamma: float

    def __call__(self, b: Batch, w: float) -> None:
        weight = torch.rsub(b.p_y, 1.0).pow_(self.gamma)
        b.add_value(weight * b.logp_y, -w, owned=True)
        if b.need_grad:
            b.add_label(weight, -w, owned=True)


@dataclass(frozen=True)
class MAE:
    """``1 - p_y`` (APL's "reduced MAE"; the full ``sum_k |p_k - e_y,k|`` is twice this)."""

    def __call__(self, b: Batch, w: float) -> None:
        b.value_const += w
        b.add_value(b.p_y, -w)
        if b.need_grad:
            b.add_label(b.p_y, -w)


@dataclass(frozen=True)
class RCE:
    """``-sum_k max(p_k, eps) * log max(e_y,k, label_clamp)`` = ``c * sum_{k != y} max(p_k, eps)``
    with ``c = -log(label_clamp)`` (9.2103 for the code's 1e-4)."""

    eps: float
    label_clamp: float

    def __call__(self, b: Batch, w: float) -> None:
        c = -math.log(self.label_clamp) * w
        others = b.p.clamp_min(self.eps).sum(1, keepdim=True).sub_(b.p_y.clamp_min(self.eps))
        b.add_value(others, c, owned=True)
        if b.need_grad:  # h_k = c max(p_k, eps)' p_k for k != y, 0 for y
            unclamped = kept(b.p, self.eps) if self.eps > 0 else b.p.clone()
            b.add_dense(unclamped.scatter_(1, b.index, 0.0), c, owned=True)


@dataclass(frozen=True)
class GCE:
    """``(1 - max(p_y, eps)^q) / q``."""

    q: float
    eps: float

    def __call__(self, b: Batch, w: float) -> None:
        b.value_const += w / self.q
        b.add_value(b.p_y.clamp_min(self.eps).pow_(self.q), -w / self.q, owned=True)
        if b.need_grad:  # 0^q = 0 where the clamp bites (q > 0)
            b.add_label(kept(b.p_y, self.eps).pow(self.q), -w, owned=True)


@dataclass(frozen=True)
class TruncatedGCE:
    """Truncated L_q of the GCE paper: ``L_q(k)`` (constant, zero gradient) when ``p_y <= k``,
    else ``L_q(p_y) = (1 - p_y^q) / q``."""

    q: float
    k: float

    def __call__(self, b: Batch, w: float) -> None:
        powered = kept(b.p_y, self.k).pow(self.q)  # p_y^q where p_y > k, else 0
        b.value_const += w / self.q
        b.add_value(powered.clamp_min(self.k**self.q), -w / self.q, owned=True)
        if b.need_grad:
            b.add_label(powered, -w, owned=True)


@dataclass(frozen=True)
class TaylorCE:
    """Order-t Taylor expansion of CE around p_y = 1: ``sum_{i=1..t} (1 - p_y)^i / i``."""

    order: int

    def __call__(self, b: Batch, w: float) -> None:
        rest = torch.rsub(b.p_y, 1.0)
        value, power, slope = rest.clone(), rest, None  # slope: sum_{i<t} rest^i = -dL/dp_y
        for i in range(2, self.order + 1):
            slope = power + 1 if slope is None else slope.add_(power)
            power = power * rest
            value.add_(power, alpha=1 / i)
        b.add_value(value, w, owned=True)
        if b.need_grad:
            b.add_label(b.p_y if slope is None else slope.mul_(b.p_y), -w, owned=slope is not None)


def _eps_softmax_label(b: Batch, m: float, eps: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(m + 1) * p_eps_y`` for the label entry of eps-softmax, ``max((p_y + m [y = argmax p]) /
    (m + 1), eps)`` (the argmax is piecewise constant), and, with the gradient, ``d log p_eps_y /
    d log p_y``: ``p_y / ((m + 1) p_eps_y)`` where the clamp does not bite, else 0."""
    hit = b.p.argmax(1, keepdim=True) == b.index
    scaled = torch.add(b.p_y, hit, alpha=m)
    floor = eps * (m + 1)
    # x / threshold(x, floor, inf): 1 / x where x > floor, else 0 (1 / inf).
    slope = b.p_y / torch.threshold(scaled, floor, math.inf) if b.need_grad else None
    return scaled.clamp_min_(floor), slope


@dataclass(frozen=True)
class EpsCE:
    """CE on the eps-softmax output: ``-log max((p_y + m [y = argmax p]) / (m + 1), eps)``."""

    m: float
    eps: float

    def __call__(self, b: Batch, w: float) -> None:
        scaled, slope = _eps_softmax_label(b, self.m, self.eps)
        b.value_const += w * math.log(self.m + 1)
        b.add_value(scaled.log_(), -w, owned=True)
        if slope is not None:
            b.add_label(slope, -w, owned=True)


@dataclass(frozen=True)
class EpsFocal:
    """Focal loss on the eps-softmax output, the weight ``(1 - p_eps_y)^gamma`` detached."""

    m: float
    gamma: float
    eps: float

    def __call__(self, b: Batch, w: float) -> None:
        scaled, slope = _eps_softmax_label(b, self.m, self.eps)
        weight = torch.mul(scaled, -1 / (self.m + 1)).add_(1.0).pow_(self.gamma)  # (1 - p_eps_y)^gamma
        log_p = scaled.log_().sub_(math.log(self.m + 1))
        b.add_value(log_p.mul_(weight), -w, owned=True)
        if slope is not None:
            b.add_label(slope.mul_(weight), -w, owned=True)


@dataclass(frozen=True)
class NCE:
    """``(-log p_y) / (-sum_k log p_k)`` (log-softmax, no clamp)."""

    def __call__(self, b: Batch, w: float) -> None:
        inverse = b.logp.sum(1, keepdim=True).reciprocal_()
        ratio = b.logp_y * inverse
        if b.need_grad:
            b.add_row(ratio * inverse, -w, owned=True)
            b.add_label(inverse, w, owned=True)
        b.add_value(ratio, w, owned=True)


@dataclass(frozen=True)
class NFL:
    """``-(1-p_y)^g log p_y / sum_k -(1-p_k)^g log p_k``; the weights are detached in both the
    numerator and the denominator, ``log p`` is not."""

    gamma: float

    def __call__(self, b: Batch, w: float) -> None:
        weight = b.focal_weights(self.gamma)
        inverse = (weight * b.logp).sum(1, keepdim=True).reciprocal_()  # -1 / normalizer
        weight_y = b.at_label(weight)
        ratio = b.logp_y * weight_y
        ratio.mul_(inverse)
        if b.need_grad:
            b.add_dense(weight * (ratio * inverse), -w, owned=True)
            b.add_label(weight_y.mul_(inverse), w, owned=True)
        b.add_value(ratio, w, owned=True)


@dataclass(frozen=True)
class NGCE:
    """``(1 - P_y) / (K - sum_k P_k)`` with ``P = max(p, eps)^q``."""

    q: float
    eps: float

    def __call__(self, b: Batch, w: float) -> None:
        # p^q = exp(q log p) (an exp instead of a pow on [N, K]); log p is set to -inf where the
        # clamp bites, so that `powered` is the gradient's P (0 there) and the clamp_min below
        # restores eps^q for the value.
        logp = torch.threshold(b.logp, math.log(self.eps), -math.inf) if self.eps > 0 else b.logp
        powered = torch.mul(logp, self.q).exp_()
        floor = self.eps**self.q
        inverse = torch.rsub(powered.clamp_min(floor).sum(1, keepdim=True), b.num_classes).reciprocal_()
        powered_y = b.at_label(powered)
        ratio = torch.addcmul(inverse, powered_y.clamp_min(floor), inverse, value=-1)  # (1 - P_y) / (K - sum P)
        if b.need_grad:
            b.add_dense(powered.mul_(ratio * inverse), self.q * w, owned=True)
            b.add_label(powered_y.mul_(inverse), -self.q * w, owned=True)
        b.add_value(ratio, w, owned=True)


@dataclass(frozen=True)
class NNCE:
    """ANL's normalized negative CE: ``v_k = A + log max(p_k, m)`` with ``A = -log m``;
    ``1 - v_y / sum_k v_k``."""

    min_prob: float

    def __call__(self, b: Batch, w: float) -> None:
        floor = math.log(self.min_prob)
        v = b.logp.clamp_min(floor).sub_(floor)  # 0 exactly where the clamp bites
        inverse = v.sum(1, keepdim=True).reciprocal_()
        ratio = b.at_label(v).mul_(inverse)
        if b.need_grad:
            unclamped = v.sign_()
            b.add_label(b.at_label(unclamped).mul_(inverse), -w, owned=True)
            b.add_dense(unclamped.mul_(ratio * inverse), w, owned=True)
        b.value_const += w
        b.add_value(ratio, -w, owned=True)


@dataclass(frozen=True)
class NNFL:
    """ANL's normalized negative focal loss: with ``log p`` clamped at ``log m`` and the detached
    weights ``w_k = (1 - p^_k)^g``, ``1 - (A - L_y) / (K*A - sum_k L_k)`` where
    ``L_k = -w_k log p^_k`` and ``A = -(1 - m)^g log m``."""

    gamma: float
    min_prob: float

    def __call__(self, b: Batch, w: float) -> None:
        floor = math.log(self.min_prob)
        logp = b.logp.clamp_min(floor)
        # (1 - max(p, m))^g = min((1 - p)^g, (1 - m)^g): the focal weights of p, capped.
        weight = b.focal_weights(self.gamma).clamp_max((1 - self.min_prob) ** self.gamma)
        weight_y = b.at_label(weight)
        top = -((1 - self.min_prob) ** self.gamma) * floor
        inverse = (weight * logp).sum(1, keepdim=True).add_(b.num_classes * top).reciprocal_()
        ratio = b.at_label(logp).mul_(weight_y).add_(top).mul_(inverse)  # (A - L_y) / (K*A - sum_k L_k)
        if b.need_grad:
            unclamped = logp.sub_(floor).sign_()
            b.add_label(b.at_label(unclamped).mul_(weight_y).mul_(inverse), -w, owned=True)
            b.add_dense(unclamped.mul_(weight).mul_(ratio * inverse), w, owned=True)
        b.value_const += w
        b.add_value(ratio, -w, owned=True)


@dataclass(frozen=True)
class AGCE:
    """ALFs' asymmetric GCE ``((a+1)^q - (a+p_y)^q) / q`` (no clamp)."""

    a: float
    q: float

    def __call__(self, b: Batch, w: float) -> None:
        shifted = torch.add(b.p_y, self.a)
        powered = shifted.pow(self.q)
        if b.need_grad:
            b.add_label(powered / shifted * b.p_y, -w, owned=True)
        b.value_const += w * (self.a + 1) ** self.q / self.q
        b.add_value(powered, -w / self.q, owned=True)


@dataclass(frozen=True)
class AUL:
    """ALFs' asymmetric unhinged loss ``((a-p_y)^q - (a-1)^q) / q`` (no clamp; a > 1)."""

    a: float
    q: float

    def __call__(self, b: Batch, w: float) -> None:
        shifted = torch.rsub(b.p_y, self.a)
        powered = shifted.pow(self.q)
        if b.need_grad:
            b.add_label(powered / shifted * b.p_y, -w, owned=True)
        b.value_const -= w * (self.a - 1) ** self.q / self.q
        b.add_value(powered, w / self.q, owned=True)


@dataclass(frozen=True)
class AEL:
    """ALFs' asymmetric exponential loss ``exp(-p_y / a)`` (no additive constant)."""

    a: float

    def __call__(self, b: Batch, w: float) -> None:
        value = torch.mul(b.p_y, -1 / self.a).exp_()
        if b.need_grad:
            b.add_label(value * b.p_y, -w / self.a, owned=True)
        b.add_value(value, w, owned=True)


@dataclass(frozen=True)
class AMSE:
    """JAL's asymmetric MSE ``sum_k (p_k - a e_y,k)^2``, divided by K when ``class_mean`` (the
    code's ``loss.mean()`` over the N*K entries)."""

    a: float
    class_mean: bool

    def __call__(self, b: Batch, w: float) -> None:
        w = w / b.num_classes if self.class_mean else w
        squares = b.p * b.p
        # sum_k p_k^2 - p_y^2 + (p_y - a)^2 = sum_k p_k^2 - 2 a p_y + a^2
        b.value_const += w * self.a**2
        b.add_value(squares.sum(1, keepdim=True), w, owned=True)
        b.add_value(b.p_y, -2 * self.a * w)
        if b.need_grad:
            b.add_label(b.p_y, -2 * self.a * w)
            b.add_dense(squares, 2 * w, owned=True)


@dataclass(frozen=True)
class IMAE:
    """IMAE: the value is the MAE ``sum_k |p_k - e_y,k| = 2 (1 - p_y)``; the gradient is MAE's,
    rescaled from MAE's weight ``4 p_y (1 - p_y)`` to IMAE's ``exp(T p_y) (1 - p_y)``, i.e.
    ``dL/dz = exp(T p_y) / 2 * (p - e_y)``."""

    T: float

    def __call__(self, b: Batch, w: float) -> None:
        b.value_const += 2 * w
        b.add_value(b.p_y, -2 * w)
        if b.need_grad:
            b.add_label(torch.mul(b.p_y, self.T).exp_(), -w / 2, owned=True)
