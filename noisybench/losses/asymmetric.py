"""Asymmetric losses (ALFs, JAL): robust without the symmetric condition.

For weights w with a unique largest w_t (the clean-label probability under noise), a loss is
asymmetric when e_t is the unique minimiser of sum_k w_k L(u, k) over the simplex. For
L(u, k) = l(u_k) with a convex decreasing l this holds iff w_t / w_n >= l'(0) / l'(1) for the
second-largest weight w_n (ALFs' asymmetry ratio); a concave decreasing l is asymmetric for any
such weights.
"""
from __future__ import annotations

from . import papers, terms
from .base import NON_NEGATIVE, POSITIVE, Choice, Real, SoftmaxLoss, register_loss

# AUL's (a - p_y)^q needs a > 1 so that the base stays positive for p_y in [0, 1].
AUL_A = Real(1.0, bounds="(]")
CLASS_REDUCTION = Choice(("mean", "sum"))


@register_loss("agce", family="asymmetric", bounded=True, papers=[papers.ALFS],
               a=POSITIVE, q=POSITIVE, scale=NON_NEGATIVE)
def agce(num_classes: int, a: float = 0.6, q: float = 0.6, scale: float = 1.0):
    return SoftmaxLoss([(scale, terms.AGCE(a, q))])


@register_loss("aul", family="asymmetric", bounded=True, papers=[papers.ALFS],
               a=AUL_A, q=POSITIVE, scale=NON_NEGATIVE)
def aul(num_classes: int, a: float = 5.5, q: float = 3.0, scale: float = 1.0):
    return SoftmaxLoss([(scale, terms.AUL(a, q))])


@register_loss("ael", family="asymmetric", bounded=True, papers=[papers.ALFS], a=POSITIVE, scale=NON_NEGATIVE)
def ael(num_classes: int, a: float = 2.5, scale: float = 1.0):
    return SoftmaxLoss([(scale, terms.AEL(a))])


@register_loss("amse", family="asymmetric", bounded=True, papers=[papers.JAL],
               a=NON_NEGATIVE, scale=NON_NEGATIVE, class_reduction=CLASS_REDUCTION)
def amse(num_classes: int, a: float = 30.0, scale: float = 1.0, class_reduction: str = "mean"):
    return SoftmaxLoss([(scale, terms.AMSE(a, class_reduction == "mean"))])
