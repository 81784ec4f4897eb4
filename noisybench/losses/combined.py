"""Weighted sums of an active and a passive (or negative, or asymmetric) loss.

``alpha`` weights the active term and ``beta`` the other, exactly as the official classes pass
them as the ``scale`` of each part. ``mae_scale`` makes explicit what the MAE part means per
code base: ``beta * (1 - p_y)`` inside APL/ALFs/ANL/JAL's NCE+MAE and NFL+MAE, but
``beta * 2 * (1 - p_y)`` inside eps-softmax's CE_eps+MAE (its ``MAELoss()`` default scale 2).
"""
from __future__ import annotations

from . import papers, terms
from .asymmetric import AUL_A, CLASS_REDUCTION
from .base import CLAMP, LOG_CLAMP, NON_NEGATIVE, POSITIVE, SoftmaxLoss, register_loss
from .symmetric import GCE_Q, LABEL_CLAMP

WEIGHTS = {"alpha": NON_NEGATIVE, "beta": NON_NEGATIVE}


@register_loss("sce", family="combined", bounded=False, papers=[papers.SCE, papers.APL],
               eps=CLAMP, label_clamp=LABEL_CLAMP, **WEIGHTS)
def sce(num_classes: int, alpha: float = 0.1, beta: float = 1.0, eps: float = 1e-7,
        label_clamp: float = 1e-4):
    return SoftmaxLoss([(alpha, terms.CE()), (beta, terms.RCE(eps, label_clamp))])


@register_loss("nce_mae", family="combined", bounded=True, papers=[papers.APL],
               mae_scale=NON_NEGATIVE, **WEIGHTS)
def nce_mae(num_classes: int, alpha: float = 1.0, beta: float = 1.0, mae_scale: float = 1.0):
    return SoftmaxLoss([(alpha, terms.NCE()), (beta * mae_scale, terms.MAE())])


@register_loss("nce_rce", family="combined", bounded=True, papers=[papers.APL],
               eps=CLAMP, label_clamp=LABEL_CLAMP, **WEIGHTS)
def nce_rce(num_classes: int, alpha: float = 1.0, beta: float = 1.0, eps: float = 1e-7,
            label_clamp: float = 1e-4):
    return SoftmaxLoss([(alpha, terms.NCE()), (beta, terms.RCE(eps, label_clamp))])


@register_loss("nfl_mae", family="combined", bounded=True, papers=[papers.APL],
               gamma=NON_NEGATIVE, mae_scale=NON_NEGATIVE, **WEIGHTS)
def nfl_mae(num_classes: int, alpha: float = 1.0, beta: float = 1.0, gamma: float = 0.5,
            mae_scale: float = 1.0):
    return SoftmaxLoss([(alpha, terms.NFL(gamma)), (beta * mae_scale, terms.MAE())])


@register_loss("nfl_rce", family="combined", bounded=True, papers=[papers.APL],
               gamma=NON_NEGATIVE, eps=CLAMP, label_clamp=LABEL_CLAMP, **WEIGHTS)
def nfl_rce(num_classes: int, alpha: float = 1.0, beta: float = 1.0, gamma: float = 0.5,
            eps: float = 1e-7, label_clamp: float = 1e-4):
    return SoftmaxLoss([(alpha, terms.NFL(gamma)), (beta, terms.RCE(eps, label_clamp))])


@register_loss("ngce_mae", family="combined", bounded=True, papers=[papers.APL],
               q=GCE_Q, eps=CLAMP, mae_scale=NON_NEGATIVE, **WEIGHTS)
def ngce_mae(num_classes: int, alpha: float = 1.0, beta: float = 1.0, q: float = 0.1,
             eps: float = 1e-7, mae_scale: float = 1.0):
    return SoftmaxLoss([(alpha, terms.NGCE(q, eps)), (beta * mae_scale, terms.MAE())])


@register_loss("ngce_rce", family="combined", bounded=True, papers=[papers.APL],
               q=GCE_Q, eps=CLAMP, label_clamp=LABEL_CLAMP, **WEIGHTS)
def ngce_rce(num_classes: int, alpha: float = 1.0, beta: float = 1.0, q: float = 0.1,
             eps: float = 1e-7, label_clamp: float = 1e-4):
    return SoftmaxLoss([(alpha, terms.NGCE(q, eps)), (beta, terms.RCE(eps, label_clamp))])


@register_loss("nce_agce", family="combined", bounded=True, papers=[papers.ALFS],
               a=POSITIVE, q=POSITIVE, **WEIGHTS)
def nce_agce(num_classes: int, alpha: float = 1.0, beta: float = 4.0, a: float = 6.0, q: float = 1.5):
    return SoftmaxLoss([(alpha, terms.NCE()), (beta, terms.AGCE(a, q))])


@register_loss("nce_aul", family="combined", bounded=True, papers=[papers.ALFS],
               a=AUL_A, q=POSITIVE, **WEIGHTS)
def nce_aul(num_classes: int, alpha: float = 1.0, beta: float = 4.0, a: float = 6.3, q: float = 1.5):
    return SoftmaxLoss([(alpha, terms.NCE()), (beta, terms.AUL(a, q))])


@register_loss("nce_ael", family="combined", bounded=True, papers=[papers.ALFS], a=POSITIVE, **WEIGHTS)
def nce_ael(num_classes: int, alpha: float = 1.0, beta: float = 4.0, a: float = 5.0):
    return SoftmaxLoss([(alpha, terms.NCE()), (beta, terms.AEL(a))])


# ANL and JAL replace L2 weight decay by an L1 term delta * sum|theta| (all parameters).
@register_loss("anl_ce", family="combined", bounded=True, papers=[papers.ANL], weight_decay=0.0,
               delta=NON_NEGATIVE, min_prob=LOG_CLAMP, **WEIGHTS)
def anl_ce(num_classes: int, alpha: float = 5.0, beta: float = 5.0, delta: float = 5e-5,
           min_prob: float = 1e-7):
    return SoftmaxLoss([(alpha, terms.NCE()), (beta, terms.NNCE(min_prob))], l1=delta)


@register_loss("anl_fl", family="combined", bounded=True, papers=[papers.ANL], weight_decay=0.0,
               gamma=NON_NEGATIVE, delta=NON_NEGATIVE, min_prob=LOG_CLAMP, **WEIGHTS)
def anl_fl(num_classes: int, alpha: float = 5.0, beta: float = 5.0, gamma: float = 0.5,
           delta: float = 5e-5, min_prob: float = 1e-7):
    return SoftmaxLoss([(alpha, terms.NFL(gamma)), (beta, terms.NNFL(gamma, min_prob))], l1=delta)


@register_loss("jal_ce", family="combined", bounded=True, papers=[papers.JAL], weight_decay=0.0,
               a=NON_NEGATIVE, delta=NON_NEGATIVE, class_reduction=CLASS_REDUCTION, **WEIGHTS)
def jal_ce(num_classes: int, alpha: float = 1.0, beta: float = 1.0, a: float = 30.0,
           delta: float = 5e-5, class_reduction: str = "mean"):
    amse = terms.AMSE(a, class_reduction == "mean")
    return SoftmaxLoss([(alpha, terms.NCE()), (beta, amse)], l1=delta)


@register_loss("jal_fl", family="combined", bounded=True, papers=[papers.JAL], weight_decay=0.0,
               a=NON_NEGATIVE, gamma=NON_NEGATIVE, delta=NON_NEGATIVE, class_reduction=CLASS_REDUCTION,
               **WEIGHTS)
def jal_fl(num_classes: int, alpha: float = 1.0, beta: float = 1.0, a: float = 30.0,
           gamma: float = 0.5, delta: float = 5e-5, class_reduction: str = "mean"):
    amse = terms.AMSE(a, class_reduction == "mean")
    return SoftmaxLoss([(alpha, terms.NFL(gamma)), (beta, amse)], l1=delta)


@register_loss("ce_eps_mae", family="combined", bounded=True, papers=[papers.EPS_SOFTMAX],
               m=NON_NEGATIVE, eps=LOG_CLAMP, mae_scale=NON_NEGATIVE, **WEIGHTS)
def ce_eps_mae(num_classes: int, alpha: float = 0.01, beta: float = 5.0, m: float = 1e5,
               eps: float = 1e-8, mae_scale: float = 2.0):
    return SoftmaxLoss([(alpha, terms.EpsCE(m, eps)), (beta * mae_scale, terms.MAE())])


@register_loss("fl_eps_mae", family="combined", bounded=True, papers=[papers.EPS_SOFTMAX],
               m=NON_NEGATIVE, gamma=NON_NEGATIVE, eps=LOG_CLAMP, mae_scale=NON_NEGATIVE, **WEIGHTS)
def fl_eps_mae(num_classes: int, alpha: float = 0.01, beta: float = 5.0, m: float = 1e5,
               gamma: float = 0.1, eps: float = 1e-8, mae_scale: float = 2.0):
    return SoftmaxLoss([(alpha, terms.EpsFocal(m, gamma, eps)), (beta * mae_scale, terms.MAE())])
