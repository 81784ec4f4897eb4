"""Weighted sums of an active and a passive (or negative, or asymmetric) loss.

``alpha`` weights the active part and ``beta`` the other, exactly as the official classes pass
them as the ``scale`` of each part. ``mae_scale`` makes explicit what the MAE part means per
code base: ``beta * (1 - p_y)`` inside APL/ALFs/ANL/JAL's NCE+MAE and NFL+MAE, but
``beta * 2 * (1 - p_y)`` inside eps-softmax's CE_eps+MAE (its ``MAELoss()`` default scale 2).
ANL and JAL replace L2 weight decay by an L1 term ``delta * sum|theta|`` over all parameters.
"""
from __future__ import annotations

from . import papers
from .active import ce, ce_eps, fl_eps
from .asymmetric import AUL_A, CLASS_REDUCTION, ael, agce, amse, aul
from .base import CLAMP, LOG_CLAMP, NON_NEGATIVE, POSITIVE, register_loss
from .passive import nnce, nnfl
from .symmetric import GCE_Q, LABEL_CLAMP, mae, nce, nfl, ngce, rce

WEIGHTS = {"alpha": NON_NEGATIVE, "beta": NON_NEGATIVE}
L1 = {"delta": 5e-5}


@register_loss(family="combined", bounded=False, papers=[papers.SCE, papers.APL],
               eps=CLAMP, label_clamp=LABEL_CLAMP, **WEIGHTS)
def sce(logits, labels, alpha=0.1, beta=1.0, eps=1e-7, label_clamp=1e-4):
    return alpha * ce(logits, labels) + beta * rce(logits, labels, eps=eps, label_clamp=label_clamp)


@register_loss(family="combined", bounded=True, papers=[papers.APL], mae_scale=NON_NEGATIVE, **WEIGHTS)
def nce_mae(logits, labels, alpha=1.0, beta=1.0, mae_scale=1.0):
    return alpha * nce(logits, labels) + beta * mae(logits, labels, scale=mae_scale)


@register_loss(family="combined", bounded=True, papers=[papers.APL], eps=CLAMP, label_clamp=LABEL_CLAMP, **WEIGHTS)
def nce_rce(logits, labels, alpha=1.0, beta=1.0, eps=1e-7, label_clamp=1e-4):
    return alpha * nce(logits, labels) + beta * rce(logits, labels, eps=eps, label_clamp=label_clamp)


@register_loss(family="combined", bounded=True, papers=[papers.APL], gamma=NON_NEGATIVE, mae_scale=NON_NEGATIVE,
               **WEIGHTS)
def nfl_mae(logits, labels, alpha=1.0, beta=1.0, gamma=0.5, mae_scale=1.0):
    return alpha * nfl(logits, labels, gamma=gamma) + beta * mae(logits, labels, scale=mae_scale)


@register_loss(family="combined", bounded=True, papers=[papers.APL], gamma=NON_NEGATIVE, eps=CLAMP,
               label_clamp=LABEL_CLAMP, **WEIGHTS)
def nfl_rce(logits, labels, alpha=1.0, beta=1.0, gamma=0.5, eps=1e-7, label_clamp=1e-4):
    return alpha * nfl(logits, labels, gamma=gamma) + beta * rce(logits, labels, eps=eps, label_clamp=label_clamp)


@register_loss(family="combined", bounded=True, papers=[papers.APL], q=GCE_Q, eps=CLAMP, mae_scale=NON_NEGATIVE,
               **WEIGHTS)
def ngce_mae(logits, labels, alpha=1.0, beta=1.0, q=0.1, eps=1e-7, mae_scale=1.0):
    return alpha * ngce(logits, labels, q=q, eps=eps) + beta * mae(logits, labels, scale=mae_scale)


@register_loss(family="combined", bounded=True, papers=[papers.APL], q=GCE_Q, eps=CLAMP, label_clamp=LABEL_CLAMP,
               **WEIGHTS)
def ngce_rce(logits, labels, alpha=1.0, beta=1.0, q=0.1, eps=1e-7, label_clamp=1e-4):
    return alpha * ngce(logits, labels, q=q, eps=eps) + beta * rce(logits, labels, eps=eps, label_clamp=label_clamp)


@register_loss(family="combined", bounded=True, papers=[papers.ALFS], a=POSITIVE, q=POSITIVE, **WEIGHTS)
def nce_agce(logits, labels, alpha=1.0, beta=4.0, a=6.0, q=1.5):
    return alpha * nce(logits, labels) + beta * agce(logits, labels, a=a, q=q)


@register_loss(family="combined", bounded=True, papers=[papers.ALFS], a=AUL_A, q=POSITIVE, **WEIGHTS)
def nce_aul(logits, labels, alpha=1.0, beta=4.0, a=6.3, q=1.5):
    return alpha * nce(logits, labels) + beta * aul(logits, labels, a=a, q=q)


@register_loss(family="combined", bounded=True, papers=[papers.ALFS], a=POSITIVE, **WEIGHTS)
def nce_ael(logits, labels, alpha=1.0, beta=4.0, a=5.0):
    return alpha * nce(logits, labels) + beta * ael(logits, labels, a=a)


@register_loss(family="combined", bounded=True, papers=[papers.ANL], weight_decay=0.0, settings=L1,
               min_prob=LOG_CLAMP, **WEIGHTS)
def anl_ce(logits, labels, alpha=5.0, beta=5.0, min_prob=1e-7):
    return alpha * nce(logits, labels) + beta * nnce(logits, labels, min_prob=min_prob)


@register_loss(family="combined", bounded=True, papers=[papers.ANL], weight_decay=0.0, settings=L1,
               gamma=NON_NEGATIVE, min_prob=LOG_CLAMP, **WEIGHTS)
def anl_fl(logits, labels, alpha=5.0, beta=5.0, gamma=0.5, min_prob=1e-7):
    return alpha * nfl(logits, labels, gamma=gamma) + beta * nnfl(logits, labels, gamma=gamma, min_prob=min_prob)


@register_loss(family="combined", bounded=True, papers=[papers.JAL], weight_decay=0.0, settings=L1,
               a=NON_NEGATIVE, class_reduction=CLASS_REDUCTION, **WEIGHTS)
def jal_ce(logits, labels, alpha=1.0, beta=1.0, a=30.0, class_reduction="mean"):
    return alpha * nce(logits, labels) + beta * amse(logits, labels, a=a, class_reduction=class_reduction)


@register_loss(family="combined", bounded=True, papers=[papers.JAL], weight_decay=0.0, settings=L1,
               a=NON_NEGATIVE, gamma=NON_NEGATIVE, class_reduction=CLASS_REDUCTION, **WEIGHTS)
def jal_fl(logits, labels, alpha=1.0, beta=1.0, a=30.0, gamma=0.5, class_reduction="mean"):
    return alpha * nfl(logits, labels, gamma=gamma) + beta * amse(logits, labels, a=a, class_reduction=class_reduction)


@register_loss(family="combined", bounded=True, papers=[papers.EPS_SOFTMAX], m=NON_NEGATIVE, eps=LOG_CLAMP,
               mae_scale=NON_NEGATIVE, **WEIGHTS)
def ce_eps_mae(logits, labels, alpha=0.01, beta=5.0, m=1e5, eps=1e-8, mae_scale=2.0):
    return alpha * ce_eps(logits, labels, m=m, eps=eps) + beta * mae(logits, labels, scale=mae_scale)


@register_loss(family="combined", bounded=True, papers=[papers.EPS_SOFTMAX], m=NON_NEGATIVE, gamma=NON_NEGATIVE,
               eps=LOG_CLAMP, mae_scale=NON_NEGATIVE, **WEIGHTS)
def fl_eps_mae(logits, labels, alpha=0.01, beta=5.0, m=1e5, gamma=0.1, eps=1e-8, mae_scale=2.0):
    return alpha * fl_eps(logits, labels, m=m, gamma=gamma, eps=eps) + beta * mae(logits, labels, scale=mae_scale)
