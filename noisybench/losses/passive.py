"""Passive losses: ANL's normalized negative losses (they push the non-label probabilities down)."""
from __future__ import annotations

from . import papers, terms
from .base import LOG_CLAMP, NON_NEGATIVE, SoftmaxLoss, register_loss


@register_loss("nnce", family="passive", bounded=True, papers=[papers.ANL, papers.JAL],
               scale=NON_NEGATIVE, min_prob=LOG_CLAMP, delta=NON_NEGATIVE)
def nnce(num_classes: int, scale: float = 1.0, min_prob: float = 1e-7, delta: float = 0.0):
    return SoftmaxLoss([(scale, terms.NNCE(min_prob))], l1=delta)


@register_loss("nnfl", family="passive", bounded=True, papers=[papers.ANL, papers.JAL],
               scale=NON_NEGATIVE, gamma=NON_NEGATIVE, min_prob=LOG_CLAMP, delta=NON_NEGATIVE)
def nnfl(num_classes: int, scale: float = 1.0, gamma: float = 0.5, min_prob: float = 1e-7,
         delta: float = 0.0):
    return SoftmaxLoss([(scale, terms.NNFL(gamma, min_prob))], l1=delta)
