"""Passive losses: ANL's normalized negative losses (they push the non-label probabilities down)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import papers
from .base import LOG_CLAMP, NON_NEGATIVE, at_label, register_loss


@register_loss(family="passive", bounded=True, papers=[papers.ANL, papers.JAL], settings={"delta": 0.0},
               scale=NON_NEGATIVE, min_prob=LOG_CLAMP)
def nnce(logits, labels, scale=1.0, min_prob=1e-7):
    """ANL's normalized negative CE: ``v_k = A + log max(p_k, m)`` with ``A = -log m``;
    ``1 - v_y / sum_k v_k``."""
    v = -math.log(min_prob) + torch.log(F.softmax(logits, dim=1).clamp(min=min_prob, max=1.0))
    return scale * (1.0 - at_label(v, labels) / v.sum(dim=1))


@register_loss(family="passive", bounded=True, papers=[papers.ANL, papers.JAL], settings={"delta": 0.0},
               scale=NON_NEGATIVE, gamma=NON_NEGATIVE, min_prob=LOG_CLAMP)
def nnfl(logits, labels, scale=1.0, gamma=0.5, min_prob=1e-7):
    """ANL's normalized negative focal loss: with ``log p`` clamped at ``log m`` and the detached
    weights ``(1 - p)^g``, ``L_k = -(1 - p_k)^g log p_k`` and ``A = L`` at ``p = m``:
    ``1 - (A - L_y) / (K*A - sum_k L_k)``.

    A is computed as the clamped entries are, in the logits' dtype: ``K*A - sum_k L_k`` cancels
    on near one-hot rows, and the code's A, a rounding away from those entries (it multiplies
    ``(1 - m)^g`` by ``log m``), leaves K times that rounding (in float32, 1e-5 of the value at
    100 classes)."""
    floor = torch.tensor(math.log(min_prob), dtype=logits.dtype, device=logits.device)
    logp = F.log_softmax(logits, dim=1).clamp(min=floor)
    focal = -(1 - logp.detach().exp()) ** gamma * logp
    top = -(1 - floor.exp()) ** gamma * floor
    return scale * (1.0 - (top - at_label(focal, labels)) / (logits.shape[1] * top - focal.sum(dim=1)))
