"""L_DMI (Xu et al. 2019): a CE warm-up, then ``-log(|det(Y^T P)| + 0.001)`` at a fixed small lr.

The value depends on the whole batch (``per_sample = False``). The trainer calls
``stage_lr(epoch)`` at the start of every epoch; that call also moves the loss into the epoch's
stage: CE for the first ``warmup_epochs`` epochs (the schedule's lr), then DMI at ``lr``
(the official CIFAR-10 protocol: 120 CE epochs, then DMI with SGD lr 1e-6).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import papers
from .base import POSITIVE, Constants, HandWrittenLoss, Integer, register_loss


class DMILoss(HandWrittenLoss):
    per_sample = False

    def __init__(self, warmup_epochs: int, lr: float, det_offset: float):
        super().__init__()
        self.warmup_epochs, self.lr, self.det_offset = warmup_epochs, lr, det_offset
        self.epoch = 0

    def stage_lr(self, epoch: int) -> float | None:
        self.epoch = epoch
        return None if epoch < self.warmup_epochs else self.lr

    def batch_value(self, logits, labels):
        if self.epoch < self.warmup_epochs:
            return F.cross_entropy(logits, labels)
        return super().batch_value(logits, labels)

    def evaluate(self, logits, labels, reduce, need_grad):
        """One LU factorisation gives the determinant and, for the gradient, ``M^{-T}``:
        ``d/dM -log(|det M| + c) = -|det M| / (|det M| + c) * M^{-T}``; 0 where det M = 0, as
        autograd's ``abs`` gives it at 0. A class without a sample in the batch leaves a zero
        row in ``M = Y^T P``: det M is exactly 0, as the code's LU finds it, and no LU is run."""
        k = logits.shape[1]
        p = torch.softmax(logits, dim=1)
        if not torch.bincount(labels, minlength=k).all():
            value = torch.full((), -math.log(self.det_offset), dtype=p.dtype, device=p.device)
            return value, torch.zeros_like(p) if need_grad else None
        joint = p.new_zeros(k, k).index_add_(0, labels, p)  # Y^T P
        lu, pivots, _ = torch.linalg.lu_factor_ex(joint)  # a singular matrix is allowed: det 0
        size = lu.diagonal().prod().abs()  # |det M| (the row swaps only flip its sign)
        shifted = torch.add(size, Constants(p)(self.det_offset))
        value = shifted.log().neg_()
        if not need_grad:
            return value, None
        if not size:
            return value, torch.zeros_like(p)
        eye = torch.eye(k, dtype=lu.dtype, device=lu.device)
        inverse_t = torch.linalg.lu_solve(lu, pivots, eye, adjoint=True)
        grad_joint = inverse_t.mul_(size.div(shifted).neg_())
        grad_p = grad_joint.index_select(0, labels)
        return value, grad_p.sub_((p * grad_p).sum(1, keepdim=True)).mul_(p)


@register_loss("dmi", family="combined", bounded=False, papers=[papers.DMI, papers.APL],
               warmup_epochs=Integer(0), lr=POSITIVE, det_offset=POSITIVE)
def dmi(num_classes: int, warmup_epochs: int = 120, lr: float = 1e-6, det_offset: float = 1e-3):
    return DMILoss(warmup_epochs, lr, det_offset)
