"""Per-sample terms of the softmax, each exactly as the papers' official code computes it.

A term is called as ``term(batch, w)`` and adds ``w`` times its per-sample value to the batch,
and, when the batch needs the gradient, ``w`` times its gradient with respect to ``log p``
(see ``base.Batch``). For a function of ``p`` that gradient is ``p_k * dL/dp_k``; a clamp
``max(x, floor)`` has zero gradient where it bites (the official code's ``torch.clamp``), and a
detached factor (the focal weights ``(1 - p)^gamma``, ``Variable(logpt.data.exp())`` in the
code) is a constant.

At a batch of 128 x 100 each tensor op costs about as much as its dispatch, so the terms keep
their ops few: [N, 1] label entries instead of [N, K] one-hot products, in-place updates of
their own temporaries, products accumulated with ``addcmul_`` (``add_*_product``), constants as
cached tensors (``b.c``), masks from ``threshold``/``sign`` or a comparison into a float tensor
(``above``; a boolean [N, K] tensor and a ``where`` cost several multiplications each), and
``2^(q log2(e) log p)`` where ``p ** q`` would need a ``pow`` (see ``base.LOG2_E``). A term says
what it reads (``reads``): "log_p" (``log p`` and its entries only), "p_y" (the label entries
of ``p`` only) or "p" (the default, all of ``p``); the batch computes no more than that. The
gradient parts are added with the weight ``w * b.grad_scale`` (``b.grad_scale`` is 1 / N for the
batch mean).

Notation: ``p = softmax(z)``, ``y`` the given label, ``K`` the number of classes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import LOG2_E, Batch


def kept(x: torch.Tensor, floor: float) -> torch.Tensor:
    """x where x > floor, else 0: x times the gradient mask of ``clamp(x, min=floor)``."""
    return torch.threshold(x, floor, 0.0) if floor > 0 else x


def above(b: Batch, x: torch.Tensor, floor: float) -> torch.Tensor:
    """1 where x > floor, else 0, in x's dtype: the gradient mask of ``clamp(x, min=floor)``."""
    return torch.gt(x, b.c(floor), out=torch.empty_like(x))


@dataclass(frozen=True)
class CE:
    """``-log p_y`` (log-softmax, no clamp), as ``torch.nn.CrossEntropyLoss``."""

    reads = "log_p"

    def __call__(self, b: Batch, w: float) -> None:
        b.add_value(b.logp_y, -w)
        b.label_const -= w * b.grad_scale


@dataclass(frozen=True)
class ClampedCE:
    """``-log max(p_y, eps)`` (LogitClip's CE on ``clamp(softmax, eps, 1)``)."""

    eps: float
    reads = "p_y"

    def __call__(self, b: Batch, w: float) -> None:
        b.add_value(b.p_y.clamp_min(self.eps).log_(), -w, owned=True)
        if b.need_grad:
            b.add_label(above(b, b.p_y, self.eps), -w * b.grad_scale, owned=True)


@dataclass(frozen=True)
class Focal:
    """``-(1 - pt)^gamma * log p_y`` with the weight detached, ``pt = exp(log p_y)``."""

    gamma: float
    reads = "log_p"

    def __call__(self, b: Batch, w: float) -> None:
        weight = torch.sub(b.c(1.0), b.p_y).pow_(self.gamma)
        b.add_value_product(weight, b.logp_y, -w)
        if b.need_grad:
            b.add_label(weight, -w * b.grad_scale, owned=True)


@dataclass(frozen=True)
class MAE:
    """``1 - p_y`` (APL's "reduced MAE"; the full ``sum_k |p_k - e_y,k|`` is twice this)."""

    reads = "p_y"

    def __call__(self, b: Batch, w: float) -> None:
        b.value_const += w
        b.add_value(b.p_y, -w)
        if b.need_grad:
            b.add_label(b.p_y, -w * b.grad_scale)


@dataclass(frozen=True)
class RCE:
    """``-sum_k max(p_k, eps) * log max(e_y,k, label_clamp)`` = ``c * sum_{k != y} max(p_k, eps)``
    with ``c = -log(label_clamp)`` (9.2103 for the code's 1e-4)."""

    eps: float
    label_clamp: float

    def __call__(self, b: Batch, w: float) -> None:
        c = -math.log(self.label_clamp) * w
        clamped = b.p.clamp_min(self.eps)
        b.add_value(clamped.sum(1, keepdim=True).sub_(b.p_y.clamp_min(self.eps)), c, owned=True)
        if b.need_grad:  # h_k = c max(p_k, eps)' p_k for k != y, 0 for y (max(p, eps) > eps iff p > eps)
            b.add_dense_off_label(torch.threshold_(clamped, self.eps, 0.0), c * b.grad_scale, owned=True)


@dataclass(frozen=True)
class GCE:
    """``(1 - max(p_y, eps)^q) / q``."""

    q: float
    eps: float
    reads = "p_y"

    def __call__(self, b: Batch, w: float) -> None:
        b.value_const += w / self.q
        b.add_value(b.p_y.clamp_min(self.eps).pow_(self.q), -w / self.q, owned=True)
        if b.need_grad:  # 0^q = 0 where the clamp bites (q > 0)
            b.add_label(kept(b.p_y, self.eps).pow(self.q), -w * b.grad_scale, owned=True)


@dataclass(frozen=True)
class TruncatedGCE:
    """Truncated L_q of the GCE paper: ``L_q(k)`` (constant, zero gradient) when ``p_y <= k``,
    else ``L_q(p_y) = (1 - p_y^q) / q``."""

    q: float
    k: float
    reads = "p_y"

    def __call__(self, b: Batch, w: float) -> None:
        powered = kept(b.p_y, self.k).pow(self.q)  # p_y^q where p_y > k, else 0
        b.value_const += w / self.q
        b.add_value(powered.clamp_min(self.k**self.q), -w / self.q, owned=True)
        if b.need_grad:
            b.add_label(powered, -w * b.grad_scale, owned=True)


@dataclass(frozen=True)
class TaylorCE:
    """Order-t Taylor expansion of CE around p_y = 1: ``sum_{i=1..t} (1 - p_y)^i / i``."""

    order: int
    reads = "p_y"

    def __call__(self, b: Batch, w: float) -> None:
        rest = torch.sub(b.c(1.0), b.p_y)
        value, power, slope = rest.clone(), rest, None  # slope: sum_{i<t} rest^i = -dL/dp_y
        for i in range(2, self.order + 1):
            slope = power + b.c(1.0) if slope is None else slope.add_(power)
            power = power * rest
            value.add_(power, alpha=1 / i)
        b.add_value(value, w, owned=True)
        if b.need_grad:
            if slope is None:
                b.add_label(b.p_y, -w * b.grad_scale)
            else:
                b.add_label_product(slope, b.p_y, -w * b.grad_scale, owned=True)


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
            b.add_label(slope, -w * b.grad_scale, owned=True)


@dataclass(frozen=True)
class EpsFocal:
    """Focal loss on the eps-softmax output, the weight ``(1 - p_eps_y)^gamma`` detached."""

    m: float
    gamma: float
    eps: float

    def __call__(self, b: Batch, w: float) -> None:
        scaled, slope = _eps_softmax_label(b, self.m, self.eps)
        weight = torch.sub(b.c(1.0), scaled, alpha=1 / (self.m + 1)).pow_(self.gamma)  # (1 - p_eps_y)^gamma
        log_p = scaled.log_().sub_(b.c(math.log(self.m + 1)))
        b.add_value_product(log_p, weight, -w, owned=True)
        if slope is not None:
            b.add_label_product(slope, weight, -w * b.grad_scale, owned=True)


@dataclass(frozen=True)
class NCE:
    """``(-log p_y) / (-sum_k log p_k)`` (log-softmax, no clamp)."""

    reads = "log_p"

    def __call__(self, b: Batch, w: float) -> None:
        inverse = b.logp.sum(1, keepdim=True).reciprocal_()
        ratio = b.logp_y * inverse
        if b.need_grad:  # h = w * inverse * (e_y - ratio)
            g = w * b.grad_scale
            b.add_row_product(ratio, inverse, -g)
            b.add_label(inverse, g, owned=True)
        b.add_value(ratio, w, owned=True)


@dataclass(frozen=True)
class NFL:
    """``-(1-p_y)^g log p_y / sum_k -(1-p_k)^g log p_k``; the weights are detached in both the
    numerator and the denominator (``p = exp(log p)``, the code's ``logpt.data.exp()``), ``log p``
    is not."""

    gamma: float
    reads = "log_p"

    def __call__(self, b: Batch, w: float) -> None:
        weight, weighted = b.focal(self.gamma)  # (1 - p)^g and (1 - p)^g log p
        inverse = weighted.sum(1, keepdim=True).reciprocal_()  # -1 / normalizer
        ratio = b.at_label(weighted).mul_(inverse)
        if b.need_grad:  # h = w * inverse * weight * (e_y - ratio)
            g = w * b.grad_scale
            b.add_dense_product(weight, ratio * inverse, -g)
            b.add_label_product(b.at_label(weight), inverse, g, owned=True)
        b.add_value(ratio, w, owned=True)


@dataclass(frozen=True)
class NGCE:
    """``(1 - P_y) / (K - sum_k P_k)`` with ``P = max(p, eps)^q``."""

    q: float
    eps: float
    reads = "log_p"

    def __call__(self, b: Batch, w: float) -> None:
        # p^q = 2^(q log2(e) log p) (an exp2 instead of a pow on [N, K], see LOG2_E); log p is
        # set to -inf where the clamp bites, so that `powered` is the gradient's P (0 there) and
        # the clamp_min below restores eps^q for the value.
        logp = torch.threshold(b.logp, math.log(self.eps), -math.inf) if self.eps > 0 else b.logp
        powered = torch.mul(logp, b.c(self.q * LOG2_E)).exp2_()
        floor = self.eps**self.q
        total = powered.clamp_min(floor).sum(1, keepdim=True)
        inverse = torch.sub(b.c(float(b.num_classes)), total).reciprocal_()
        powered_y = b.at_label(powered)
        ratio = torch.addcmul(inverse, powered_y.clamp_min(floor), inverse, value=-1)  # (1 - P_y) / (K - sum P)
        if b.need_grad:  # h = q * w * inverse * P * (ratio - e_y)
            g = self.q * w * b.grad_scale
            b.add_label_product(powered_y, inverse, -g, owned=True)
            b.add_dense_product(powered, ratio * inverse, g, owned=True)
        b.add_value(ratio, w, owned=True)


@dataclass(frozen=True)
class NNCE:
    """ANL's normalized negative CE: ``v_k = A + log max(p_k, m)`` with ``A = -log m``;
    ``1 - v_y / sum_k v_k``."""

    min_prob: float
    reads = "log_p"

    def __call__(self, b: Batch, w: float) -> None:
        floor = math.log(self.min_prob)
        v = b.logp.clamp_min(floor).sub_(b.c(floor))  # 0 exactly where the clamp bites
        inverse = v.sum(1, keepdim=True).reciprocal_()
        ratio = b.at_label(v).mul_(inverse)
        if b.need_grad:  # h = w * inverse * [log p > log m] * (ratio - e_y)
            g = w * b.grad_scale
            unclamped = v.sign_()
            b.add_label_product(b.at_label(unclamped), inverse, -g, owned=True)
            b.add_dense_product(unclamped, ratio * inverse, g, owned=True)
        b.value_const += w
        b.add_value(ratio, -w, owned=True)


@dataclass(frozen=True)
class NNFL:
    """ANL's normalized negative focal loss: with ``log p`` clamped at ``log m`` and the detached
    weights ``w_k = (1 - p^_k)^g``, ``1 - (A - L_y) / (K*A - sum_k L_k)`` where
    ``L_k = -w_k log p^_k`` and ``A = -(1 - m)^g log m``."""

    gamma: float
    min_prob: float
    reads = "log_p"

    def __call__(self, b: Batch, w: float) -> None:
        floor = math.log(self.min_prob)
        cap = (1 - self.min_prob) ** self.gamma
        # (1 - max(p, m))^g = min((1 - p)^g, (1 - m)^g): the focal weights of p, capped; their
        # product with max(log p, log m) is max((1 - p)^g log p, cap * log m) (both factors
        # bite together, and log p < 0). A is that clamped product, rounded as the dtype rounds
        # it: K*A - sum_k L_k cancels on near one-hot rows, and an A a rounding away from the
        # clamped entries would leave K times that rounding (in float32, 1e-5 of the value at
        # 100 classes).
        weight, weighted = b.focal(self.gamma)
        top = -b.c.product(cap, floor)
        clamped = weighted.clamp_min(-top)
        inverse = clamped.sum(1, keepdim=True).add_(b.c(b.num_classes * top)).reciprocal_()
        ratio = b.at_label(clamped).add_(b.c(top)).mul_(inverse)  # (A - L_y) / (K*A - sum_k L_k)
        if b.need_grad:  # h = w * inverse * weight * [log p > log m] * (ratio - e_y)
            # Where the clamp does not bite, the code's detached weight is (1 - p)^g, uncapped.
            g = w * b.grad_scale
            unclamped = above(b, b.logp, floor).mul_(weight)
            b.add_label_product(b.at_label(unclamped), inverse, -g, owned=True)
            b.add_dense_product(unclamped, ratio * inverse, g, owned=True)
        b.value_const += w
        b.add_value(ratio, -w, owned=True)


@dataclass(frozen=True)
class AGCE:
    """ALFs' asymmetric GCE ``((a+1)^q - (a+p_y)^q) / q`` (no clamp)."""

    a: float
    q: float
    reads = "p_y"

    def __call__(self, b: Batch, w: float) -> None:
        shifted = torch.add(b.p_y, b.c(self.a))
        powered = shifted.pow(self.q)
        if b.need_grad:
            b.add_label_product(powered / shifted, b.p_y, -w * b.grad_scale, owned=True)
        b.value_const += w * (self.a + 1) ** self.q / self.q
        b.add_value(powered, -w / self.q, owned=True)


@dataclass(frozen=True)
class AUL:
    """ALFs' asymmetric unhinged loss ``((a-p_y)^q - (a-1)^q) / q`` (no clamp; a > 1)."""

    a: float
    q: float
    reads = "p_y"

    def __call__(self, b: Batch, w: float) -> None:
        shifted = torch.sub(b.c(self.a), b.p_y)
        powered = shifted.pow(self.q)
        if b.need_grad:
            b.add_label_product(powered / shifted, b.p_y, -w * b.grad_scale, owned=True)
        b.value_const -= w * (self.a - 1) ** self.q / self.q
        b.add_value(powered, w / self.q, owned=True)


@dataclass(frozen=True)
class AEL:
    """ALFs' asymmetric exponential loss ``exp(-p_y / a)`` (no additive constant)."""

    a: float
    reads = "p_y"

    def __call__(self, b: Batch, w: float) -> None:
        value = torch.mul(b.p_y, b.c(-1 / self.a)).exp_()
        if b.need_grad:
            b.add_label_product(value, b.p_y, -w / self.a * b.grad_scale)
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
            g = w * b.grad_scale
            b.add_label(b.p_y, -2 * self.a * g)
            b.add_dense(squares, 2 * g, owned=True)


@dataclass(frozen=True)
class IMAE:
    """IMAE: the value is the MAE ``sum_k |p_k - e_y,k| = 2 (1 - p_y)``; the gradient is MAE's,
    rescaled from MAE's weight ``4 p_y (1 - p_y)`` to IMAE's ``exp(T p_y) (1 - p_y)``, i.e.
    ``dL/dz = exp(T p_y) / 2 * (p - e_y)``."""

    T: float
    reads = "p_y"

    def __call__(self, b: Batch, w: float) -> None:
        b.value_const += 2 * w
        b.add_value(b.p_y, -2 * w)
        if b.need_grad:
            b.add_label(torch.mul(b.p_y, b.c(self.T)).exp_(), -w / 2 * b.grad_scale, owned=True)
