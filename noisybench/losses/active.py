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
        mean = soft.mean(1, keepdim=True)
        u = soft.div_(mean)
        # d / lam in units of log2, for exp2 (see LOG2_E): (u - (u_y - threshold)) * log2(e) / lam,
        # 0 for y.
        shift = u.gather(1, index).sub_(c(self.threshold))
        d = torch.sub(u, shift).mul_(c(LOG2_E / self.lam)).scatter_(1, index, 0.0)
        top = d.amax(1, keepdim=True)  # the code's max subtraction
        exps = d.sub_(top).exp2_()
        sums = exps.sum(1, keepdim=True)
        value = sums.log().add_(top, alpha=math.log(2))  # log sum_k exp(d_k / lam)
        if reduce:  # lam * (mean - log K)
            value = torch.add(c(-self.lam * math.log(classes)), value.sum(), alpha=self.lam / size)
        else:
            value = value.sub_(c(math.log(classes))).mul_(c(self.lam)).squeeze(1)
        if not need_grad:
            return value, None
        # dL/du = softmax(d) - e_y; through u = s / mean(s): (g - mean_k(g u)) / mean(s);
        # softplus' = sigmoid. ``reduce``: the mean's 1 / N goes into the first factor.
        if reduce:
            sums.mul_(c(float(size)))
        grad_u = exps.div_(sums).scatter_add_(1, index, c(-1 / size if reduce else -1.0).expand(size, 1))
        grad_u.sub_((grad_u * u).mean(1, keepdim=True))
        return value, grad_u.div_(mean).mul_(torch.sigmoid(logits))


@register_loss("ldr_kl", family="active", bounded=True, papers=[papers.LDR, papers.JAL],
               threshold=NON_NEGATIVE, lam=POSITIVE)
def ldr_kl(num_classes: int, threshold: float = 0.1, lam: float = 10.0):
    return LDRKL(threshold, lam)
