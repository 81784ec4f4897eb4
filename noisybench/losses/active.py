"""Active losses (they push p_y up and nothing else): CE and its robust variants."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import papers, terms
from .base import (CLAMP, LOG_CLAMP, NON_NEGATIVE, POSITIVE, Integer, Loss, Real, SoftmaxLoss,
                   as_float, register_loss)
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
    """CE on clipped logits: ``n = ||z||_2 + eps``; where ``n > 1/delta`` use ``delta * z / n``;
    then CE on ``clamp(softmax, eps, 1)``. The clip runs under autograd (its Jacobian is part of
    the official gradient)."""

    def __init__(self, delta: float, eps: float):
        super().__init__([(1.0, terms.ClampedCE(eps))])
        self.clip_delta, self.eps = delta, eps

    def _evaluate(self, logits, labels, reduce):
        logits = as_float(logits)
        norms = logits.norm(p=2, dim=-1, keepdim=True) + self.eps
        clipped = torch.where(norms > 1 / self.clip_delta, logits / norms * self.clip_delta, logits)
        return super()._evaluate(clipped, labels, reduce)


@register_loss("ce_lc", family="active", bounded=True, papers=[papers.LOGIT_CLIP, papers.JAL],
               delta=POSITIVE, eps=LOG_CLAMP)
def ce_lc(num_classes: int, delta: float = 2.5, eps: float = 1e-8):
    return LogitClipCE(delta, eps)


class _LDRKL(torch.autograd.Function):
    """``lam * log mean_k exp(d_k / lam)`` with ``u = softplus(z) / mean_k softplus(z)`` and
    ``d = threshold * (1 - e_y) + u - u_y``; the backward is written out (one node)."""

    @staticmethod
    def forward(ctx, logits, labels, threshold, lam):
        index = labels.unsqueeze(1)
        soft = F.softplus(logits)
        mean = soft.mean(1, keepdim=True)
        u = soft / mean
        d = (u - u.gather(1, index) + threshold).div_(lam).scatter_(1, index, 0.0)
        lse = torch.logsumexp(d, 1, keepdim=True)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(index, d.sub_(lse).exp_(), u, mean, logits)
        return lam * (lse.squeeze(1) - math.log(logits.shape[1]))

    @staticmethod
    def backward(ctx, grad_value):
        index, weights, u, mean, logits = ctx.saved_tensors
        grad_u = weights.scatter_add(1, index, torch.full_like(mean, -1.0))  # pi - e_y
        centred = grad_u - (grad_u * u).mean(1, keepdim=True)
        grad = centred.div_(mean).mul_(torch.sigmoid(logits)).mul_(grad_value.unsqueeze(1))
        return grad, None, None, None


class LDRKL(Loss):
    def __init__(self, threshold: float, lam: float):
        super().__init__()
        self.threshold, self.lam = threshold, lam

    def values(self, logits, labels):
        return _LDRKL.apply(as_float(logits), labels, self.threshold, self.lam)


@register_loss("ldr_kl", family="active", bounded=True, papers=[papers.LDR, papers.JAL],
               threshold=NON_NEGATIVE, lam=POSITIVE)
def ldr_kl(num_classes: int, threshold: float = 0.1, lam: float = 10.0):
    return LDRKL(threshold, lam)
