"""Asymmetric losses (ALFs, JAL): robust without the symmetric condition.

For weights w with a unique largest w_t (the clean-label probability under noise), a loss is
asymmetric when e_t is the unique minimiser of sum_k w_k L(u, k) over the simplex. For
L(u, k) = l(u_k) with a convex decreasing l this holds iff w_t / w_n >= l'(0) / l'(1) for the
second-largest weight w_n (ALFs' asymmetry ratio); a concave decreasing l is asymmetric for any
such weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import papers
from .base import NON_NEGATIVE, POSITIVE, Choice, Real, at_label, one_hot, register_loss

# AUL's (a - p_y)^q needs a > 1 so that the base stays positive for p_y in [0, 1].
AUL_A = Real(1.0, bounds="(]")
CLASS_REDUCTION = Choice(("mean", "sum"))


@register_loss(family="asymmetric", bounded=True, papers=[papers.ALFS], a=POSITIVE, q=POSITIVE, scale=NON_NEGATIVE)
def agce(logits, labels, a=0.6, q=0.6, scale=1.0):
    """ALFs' asymmetric GCE ``((a+1)^q - (a+p_y)^q) / q`` (no clamp)."""
    p_y = at_label(F.softmax(logits, dim=1), labels)
    return scale * ((a + 1) ** q - (a + p_y) ** q) / q


@register_loss(family="asymmetric", bounded=True, papers=[papers.ALFS], a=AUL_A, q=POSITIVE, scale=NON_NEGATIVE)
def aul(logits, labels, a=5.5, q=3.0, scale=1.0):
    """ALFs' asymmetric unhinged loss ``((a-p_y)^q - (a-1)^q) / q`` (no clamp; a > 1)."""
    p_y = at_label(F.softmax(logits, dim=1), labels)
    return scale * ((a - p_y) ** q - (a - 1) ** q) / q


@register_loss(family="asymmetric", bounded=True, papers=[papers.ALFS], a=POSITIVE, scale=NON_NEGATIVE)
def ael(logits, labels, a=2.5, scale=1.0):
    """ALFs' asymmetric exponential loss ``exp(-p_y / a)`` (no additive constant)."""
    return scale * torch.exp(-at_label(F.softmax(logits, dim=1), labels) / a)


@register_loss(family="asymmetric", bounded=True, papers=[papers.JAL],
               a=NON_NEGATIVE, scale=NON_NEGATIVE, class_reduction=CLASS_REDUCTION)
def amse(logits, labels, a=30.0, scale=1.0, class_reduction="mean"):
    """JAL's asymmetric MSE ``sum_k (p_k - a e_y,k)^2``, divided by K for ``class_reduction=mean``
    (the code's ``loss.mean()`` over the N*K entries)."""
    p = F.softmax(logits, dim=1)
    squares = (p - one_hot(labels, p) * a) ** 2
    return scale * (squares.mean(dim=1) if class_reduction == "mean" else squares.sum(dim=1))
