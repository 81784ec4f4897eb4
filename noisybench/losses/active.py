"""Active losses (they push p_y up and nothing else): CE and its robust variants."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import papers, terms
from .base import (CLAMP, LOG2_E, LOG_CLAMP, NON_NEGATIVE, POSITIVE, Constants, HandWrittenLoss, Integer,
                   Loss, Real, SoftmaxLoss, register_loss)
from .symmetric import GCE_Q


class CrossEntropy(Loss):
    """``torch.nn.functional.cross_entropy`` itself, as every paper's CE baseline."""

    def values(self, logits, labels):
        return F.cross_entropy(logits, labels, reduction="none")

    def batch_value(self, logits, labels):
        return F.cross_entropy(logits, labels)


@register_loss("ce", family="active", bounded=False, papers=[papers.CE])
def ce(num_classes: int):
    return CrossEntropy()


@register_loss("fl", family="active", bounded=False, papers=[papers.FOCAL, papers.APL], gamma=NON_NEGATIVE)
def fl(num_classes: int, gamma: float = 0.5):
    return SoftmaxLoss([(1.0, terms.Focal(gamma))])


@register_loss("gce", family="active", bounded=True, papers=[papers.GCE, papers.APL], q=GCE_Q, eps=CLAMP)
def gce(num_classes: int, q: float = 0.7, eps: float = 1e-7):
    return SoftmaxLoss([(1.0, terms.GCE(q, eps))])


@register_loss("tgce", family="active", bounded=True, papers=[papers.GCE],
               q=GCE_Q, k=Real(0.0, 1.0, "[)"))
def tgce(num_classes: int, q: float = 0.7, k: float = 0.5):
    return SoftmaxLoss([(1.0, terms.TruncatedGCE(q, k))])


@register_loss("taylor_ce", family="active", bounded=True, papers=[papers.TAYLOR], order=Integer(1))
def taylor_ce(num_classes: int, order: int = 2):
    return SoftmaxLoss([(1.0, terms.TaylorCE(order))])


@register_loss("poly1", family="active", bounded=False, papers=[papers.POLY], epsilon=Real(-1.0))
def poly1(num_classes: int, epsilon: float = 1.0):
    return SoftmaxLoss([(1.0, terms.CE()), (epsilon, terms.MAE())])


@register_loss("ce_eps", family="active", bounded=True, papers=[papers.EPS_SOFTMAX],
               m=NON_NEGATIVE, eps=LOG_CLAMP)
def ce_eps(num_classes: int, m: float = 1e5, eps: float = 1e-8):
    return SoftmaxLoss([(1.0, terms.EpsCE(m, eps))])


@register_loss("fl_eps", family="active", bounded=True, papers=[papers.EPS_SOFTMAX],
               m=NON_NEGATIVE, gamma=NON_NEGATIVE, eps=LOG_CLAMP)
def fl_eps(num_classes: int, m: float = 1e5, gamma: float = 0.1, eps: float = 1e-8):
    return SoftmaxLoss([(1.0, terms.EpsFocal(m, gamma, eps))])


class LogitClipCE(SoftmaxLoss):
    """CE on clipped logits: ``n = ||z||_2 + eps``; where ``n > 1/delta`` the logits become
    ``delta * z / n``; then CE on ``clamp(softmax, eps, 1)``. The gradient goes back through the
    clip, whose Jacobian on a clipped row is ``(delta / n) (I - z z^T / (n ||z||))``."""

    def __init__(self, delta: float, eps: float):
        super().__init__([(1.0, terms.ClampedCE(eps))])
        self.clip_delta, self.eps = delta, eps

    def evaluate(self, logits, labels, reduce, need_grad):
        c = Constants(logits)
        norms = torch.linalg.vector_norm(logits, dim=1, keepdim=True)
        shifted = norms + c(self.eps)
        clipped = shifted > c(1 / self.clip_delta)
        factor = torch.where(clipped, torch.div(c(self.clip_delta), shifted), c(1.0))
        # The gradient with respect to the clipped logits, times ``factor``; then the rest of
        # the clip's Jacobian, ``-z z^T / (n ||z||)`` times that on clipped rows.
        value, grad = super().evaluate(logits * factor, labels, reduce, need_grad, factor)
        if grad is not None:
            along = torch.where(clipped, torch.mul(shifted, norms).reciprocal_(), c(0.0))
            grad.addcmul_(logits, along.mul_((logits * grad).sum(1, keepdim=True)), value=-1)
        return value, grad


@register_loss("ce_lc", family="active", bounded=True, papers=[papers.LOGIT_CLIP, papers.JAL],
               delta=POSITIVE, eps=LOG_CLAMP)
def ce_lc(num_classes: int, delta: float = 2.5, eps: float = 1e-8):
    return LogitClipCE(delta, eps)


class LDRKL(HandWrittenLoss):
    """JAL's ``LDRLoss_V1``: ``u = softplus(z) / mean_k softplus(z)``,
    ``d = threshold * (1 - e_y) + u - u_y``, loss ``lam * log mean_k exp(d / lam)``."""

    def __init__(self, threshold: float, lam: float):
        super().__init__()
        self.threshold, self.lam = threshold, lam

    def evaluate(self, logits, labels, reduce, need_grad):
        c = Constants(logits)
        size, classes = logits.shape
        index = labels.unsqueeze(1)
        soft = F.softplus(logits)
        # In units of log2 for exp2 (see LOG2_E): v = u log2(e) / lam, one [N, 1] factor on
        # softplus; d = v - (v_y - t) off the label (t = threshold log2(e) / lam), 0 at it.
        # (Sums with the 1 / K in the constant: a mean costs a sum and a division here.)
        factor = torch.div(c(classes * LOG2_E / self.lam), soft.sum(1, keepdim=True))
        v = soft.mul_(factor)
        shift = v.gather(1, index).sub_(c(self.threshold * LOG2_E / self.lam))
        # The code's max subtraction, by top = max_k v - shift: top >= every d_k (d_y = 0 <=
        # v_y - shift = t) and exceeds their max by at most t. Then d_k - top = v_k - max_k v
        # off the label, and shift - max_k v at it.
        most = v.amax(1, keepdim=True)
        at_label = torch.sub(shift, most)  # -top
        exps = torch.sub(v, most).scatter_(1, index, at_label).exp2_()
        # The log of the mean, as the code takes it: the log of the sum minus log K cancels in
        # float32, the loss being small beside lam * log K (up to 8e-5 of it at 100 classes).
        means = exps.mean(1, keepdim=True)
        value = means.log().sub_(at_label, alpha=math.log(2))  # log mean_k exp(d_k / lam)
        if reduce:
            value = value.sum().mul_(c(self.lam / size))
        else:
            value = value.mul_(c(self.lam)).squeeze(1)
        if not need_grad:
            return value, None
        # dL/du = g = softmax(d) - e_y; through u = s / mean(s): (g - mean_k(g u)) / mean(s),
        # with 1 / mean(s) = factor lam / log2(e) taken into g's [N, 1] parts and u = v lam /
        # log2(e). softplus' = sigmoid. ``reduce``: the batch mean's 1 / N goes into g as well.
        # softmax(d) = exps / (K means): the 1 / K goes into ``row`` and back out at the label.
        row = factor.mul_(c(self.lam / LOG2_E / classes / (size if reduce else 1)))  # 1 / (N sum(s))
        grad = exps.mul_(row.div(means)).scatter_add_(1, index, row.mul(c(-float(classes))))
        grad.sub_((grad * v).sum(1, keepdim=True), alpha=self.lam / LOG2_E / classes)
        return value, grad.mul_(torch.sigmoid(logits))


@register_loss("ldr_kl", family="active", bounded=True, papers=[papers.LDR, papers.JAL],
               threshold=NON_NEGATIVE, lam=POSITIVE)
def ldr_kl(num_classes: int, threshold: float = 0.1, lam: float = 10.0):
    return LDRKL(threshold, lam)
