"""Symmetric losses: sum_k L(f(x), k) is the same constant for every x (Ghosh et al. 2017).

MAE and RCE are APL's passive losses; NCE, NFL and NGCE are its normalized (active) losses. IMAE
keeps MAE's value and changes only its gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import papers
from .base import CLAMP, NON_NEGATIVE, Real, at_label, one_hot, register_loss

LABEL_CLAMP = Real(0.0, 1.0, "(]")
GCE_Q = Real(0.0, 1.0, "(]")


@register_loss(family="symmetric", bounded=True, papers=[papers.MAE, papers.APL, papers.ALFS], scale=NON_NEGATIVE)
def mae(logits, labels, scale=1.0):
    """``1 - p_y`` (APL's "reduced MAE"; the full ``sum_k |p_k - e_y,k|`` is twice this)."""
    return scale * (1.0 - at_label(F.softmax(logits, dim=1), labels))


@register_loss(family="symmetric", bounded=True, papers=[papers.SCE, papers.APL],
               scale=NON_NEGATIVE, eps=CLAMP, label_clamp=LABEL_CLAMP)
def rce(logits, labels, scale=1.0, eps=1e-7, label_clamp=1e-4):
    """``-sum_k max(p_k, eps) * log max(e_y,k, label_clamp)``: ``-log(label_clamp)`` (9.2103 for
    the code's 1e-4) times ``sum_{k != y} max(p_k, eps)``."""
    p = F.softmax(logits, dim=1).clamp(min=eps, max=1.0)
    target = one_hot(labels, p).clamp(min=label_clamp, max=1.0)
    return scale * -(p * torch.log(target)).sum(dim=1)


@register_loss(family="symmetric", bounded=True, papers=[papers.APL], scale=NON_NEGATIVE)
def nce(logits, labels, scale=1.0):
    """``(-log p_y) / (-sum_k log p_k)``."""
    logp = F.log_softmax(logits, dim=1)
    return scale * -at_label(logp, labels) / -logp.sum(dim=1)


@register_loss(family="symmetric", bounded=True, papers=[papers.APL], scale=NON_NEGATIVE, gamma=NON_NEGATIVE)
def nfl(logits, labels, scale=1.0, gamma=0.5):
    """``-(1-p_y)^g log p_y / sum_k -(1-p_k)^g log p_k``, the weights ``(1 - p)^g`` detached in
    both (the code's ``logpt.data.exp()``), ``log p`` not."""
    logp = F.log_softmax(logits, dim=1)
    focal = -(1 - logp.detach().exp()) ** gamma * logp
    return scale * at_label(focal, labels) / focal.sum(dim=1)


@register_loss(family="symmetric", bounded=True, papers=[papers.APL], scale=NON_NEGATIVE, q=GCE_Q, eps=CLAMP)
def ngce(logits, labels, scale=1.0, q=0.1, eps=1e-7):
    """``(1 - P_y) / (K - sum_k P_k)`` with ``P = max(p, eps)^q``."""
    powered = F.softmax(logits, dim=1).clamp(min=eps, max=1.0) ** q
    return scale * (1.0 - at_label(powered, labels)) / (logits.shape[1] - powered.sum(dim=1))


@register_loss(family="symmetric", bounded=True, papers=[papers.IMAE], T=Real(0.0))
def imae(logits, labels, T=8.0):
    """IMAE: the value is the MAE ``sum_k |p_k - e_y,k| = 2 (1 - p_y)``; the gradient is MAE's,
    rescaled from MAE's weight ``4 p_y (1 - p_y)`` to IMAE's ``exp(T p_y) (1 - p_y)``, i.e.
    ``dL/dz = exp(T p_y) / 2 * (p - e_y)``: CE's gradient times that detached weight, added as
    ``w * (CE - CE.detach())``, which is 0 in value."""
    p_y = at_label(F.softmax(logits, dim=1), labels)
    ce = F.cross_entropy(logits, labels, reduction="none")
    weight = torch.exp(T * p_y.detach()) / 2
    return 2 * (1.0 - p_y.detach()) + weight * (ce - ce.detach())
