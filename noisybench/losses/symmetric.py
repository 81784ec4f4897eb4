"""Symmetric losses: sum_k L(f(x), k) is the same constant for every x (Ghosh et al. 2017).

MAE and RCE are APL's passive losses; NCE, NFL and NGCE are its normalized (active) losses. IMAE
keeps MAE's value and changes only its gradient.
"""
from __future__ import annotations

from . import papers, terms
from .base import CLAMP, NON_NEGATIVE, Real, SoftmaxLoss, register_loss

LABEL_CLAMP = Real(0.0, 1.0, "(]")
GCE_Q = Real(0.0, 1.0, "(]")


@register_loss("mae", family="symmetric", bounded=True, papers=[papers.MAE, papers.APL, papers.ALFS],
               scale=NON_NEGATIVE)
def mae(num_classes: int, scale: float = 1.0):
    return SoftmaxLoss([(scale, terms.MAE())])


@register_loss("rce", family="symmetric", bounded=True, papers=[papers.SCE, papers.APL],
               scale=NON_NEGATIVE, eps=CLAMP, label_clamp=LABEL_CLAMP)
def rce(num_classes: int, scale: float = 1.0, eps: float = 1e-7, label_clamp: float = 1e-4):
    return SoftmaxLoss([(scale, terms.RCE(eps, label_clamp))])


@register_loss("nce", family="symmetric", bounded=True, papers=[papers.APL], scale=NON_NEGATIVE)
def nce(num_classes: int, scale: float = 1.0):
    return SoftmaxLoss([(scale, terms.NCE())])


@register_loss("nfl", family="symmetric", bounded=True, papers=[papers.APL],
               scale=NON_NEGATIVE, gamma=NON_NEGATIVE)
def nfl(num_classes: int, scale: float = 1.0, gamma: float = 0.5):
    return SoftmaxLoss([(scale, terms.NFL(gamma))])


@register_loss("ngce", family="symmetric", bounded=True, papers=[papers.APL],
               scale=NON_NEGATIVE, q=GCE_Q, eps=CLAMP)
def ngce(num_classes: int, scale: float = 1.0, q: float = 0.1, eps: float = 1e-7):
    return SoftmaxLoss([(scale, terms.NGCE(q, eps))])


@register_loss("imae", family="symmetric", bounded=True, papers=[papers.IMAE], T=Real(0.0))
def imae(num_classes: int, T: float = 8.0):
    return SoftmaxLoss([(1.0, terms.IMAE(T))])
