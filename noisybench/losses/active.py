"""Active losses (they push p_y up and nothing else): CE and its robust variants."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import papers
from .base import CLAMP, LOG_CLAMP, NON_NEGATIVE, POSITIVE, Integer, Real, at_label, one_hot, register_loss
from .symmetric import GCE_Q, mae


@register_loss(family="active", bounded=False, papers=[papers.CE])
def ce(logits, labels):
    """``torch.nn.functional.cross_entropy`` itself, as every paper's CE baseline."""
    return F.cross_entropy(logits, labels, reduction="none")


def focal_weight(logpt: torch.Tensor, gamma: float) -> torch.Tensor:
    """``(1 - pt)^gamma`` with ``pt = exp(log pt)`` detached: the code's ``Variable(logpt.data.exp())``."""
    return (1 - logpt.detach().exp()) ** gamma


@register_loss(family="active", bounded=False, papers=[papers.FOCAL, papers.APL], gamma=NON_NEGATIVE)
def fl(logits, labels, gamma=0.5):
    """``-(1 - pt)^gamma * log pt``, the weight detached."""
    logpt = at_label(F.log_softmax(logits, dim=1), labels)
    return -focal_weight(logpt, gamma) * logpt


@register_loss(family="active", bounded=True, papers=[papers.GCE, papers.APL], q=GCE_Q, eps=CLAMP)
def gce(logits, labels, q=0.7, eps=1e-7):
    """``(1 - max(p_y, eps)^q) / q``."""
    p = F.softmax(logits, dim=1).clamp(min=eps, max=1.0)
    return (1.0 - at_label(p, labels) ** q) / q


@register_loss(family="active", bounded=True, papers=[papers.GCE], q=GCE_Q, k=Real(0.0, 1.0, "[)"))
def tgce(logits, labels, q=0.7, k=0.5):
    """Truncated L_q of the GCE paper: ``(1 - p_y^q) / q`` where ``p_y > k``, else the constant
    ``(1 - k^q) / q`` (no gradient)."""
    p_y = at_label(F.softmax(logits, dim=1), labels)
    return torch.where(p_y > k, (1.0 - p_y ** q) / q, (1.0 - k ** q) / q)


@register_loss(family="active", bounded=True, papers=[papers.TAYLOR], order=Integer(1))
def taylor_ce(logits, labels, order=2):
    """Order-t Taylor expansion of CE around p_y = 1: ``sum_{i=1..t} (1 - p_y)^i / i``."""
    rest = 1.0 - at_label(F.softmax(logits, dim=1), labels)
    return sum(rest ** i / i for i in range(1, order + 1))


@register_loss(family="active", bounded=False, papers=[papers.POLY], epsilon=Real(-1.0))
def poly1(logits, labels, epsilon=1.0):
    """Poly-1: ``CE + epsilon * (1 - p_y)``."""
    return ce(logits, labels) + epsilon * mae(logits, labels)


def eps_softmax(logits: torch.Tensor, m: float, eps: float) -> torch.Tensor:
    """eps-softmax's output: ``m`` added to the largest probability, all divided by ``m + 1``,
    clamped at ``eps`` (the argmax is piecewise constant: no gradient flows through it)."""
    p = F.softmax(logits, dim=1)
    p = p + one_hot(p.argmax(dim=1), p) * m
    return (p / (m + 1)).clamp(min=eps)


@register_loss(family="active", bounded=True, papers=[papers.EPS_SOFTMAX], m=NON_NEGATIVE, eps=LOG_CLAMP)
def ce_eps(logits, labels, m=1e5, eps=1e-8):
    """CE on the eps-softmax output."""
    return -at_label(torch.log(eps_softmax(logits, m, eps)), labels)


@register_loss(family="active", bounded=True, papers=[papers.EPS_SOFTMAX],
               m=NON_NEGATIVE, gamma=NON_NEGATIVE, eps=LOG_CLAMP)
def fl_eps(logits, labels, m=1e5, gamma=0.1, eps=1e-8):
    """Focal loss on the eps-softmax output, the weight detached."""
    logpt = at_label(torch.log(eps_softmax(logits, m, eps)), labels)
    return -focal_weight(logpt, gamma) * logpt


@register_loss(family="active", bounded=True, papers=[papers.LOGIT_CLIP, papers.JAL], delta=POSITIVE, eps=LOG_CLAMP)
def ce_lc(logits, labels, delta=2.5, eps=1e-8):
    """CE on clipped logits (JAL's ``CEandLC``): where ``||z||_2 + eps > 1/delta`` the logits
    become ``delta * z / (||z||_2 + eps)``; then CE on ``clamp(softmax, eps, 1)``."""
    norms = torch.linalg.vector_norm(logits, dim=1, keepdim=True) + eps
    clipped = torch.where(norms > 1 / delta, logits / norms * delta, logits)
    p = F.softmax(clipped, dim=1).clamp(min=eps, max=1.0)
    return -at_label(torch.log(p), labels)


@register_loss(family="active", bounded=True, papers=[papers.LDR, papers.JAL], threshold=NON_NEGATIVE, lam=POSITIVE)
def ldr_kl(logits, labels, threshold=0.1, lam=10.0):
    """JAL's ``LDRLoss_V1``: ``u = softplus(z) / mean_k softplus(z)``, ``d = threshold * (1 - e_y)
    + u - u_y``, loss ``lam * log mean_k exp(d / lam)`` (its max subtracted, detached)."""
    u = F.softplus(logits)
    u = u / u.mean(dim=1, keepdim=True)
    off_label = 1.0 - one_hot(labels, u)
    d = (threshold * off_label + u - at_label(u, labels).unsqueeze(1)) / lam
    top = d.max(dim=1, keepdim=True).values.detach()
    return (lam * (torch.log(torch.exp(d - top).mean(dim=1, keepdim=True)) + top)).squeeze(1)


