"""L_DMI (Xu et al. 2019): a CE warm-up, then ``-log(|det(Y^T P)| + 0.001)`` at a fixed small lr.

The value depends on the whole batch (``per_sample = False``). The trainer calls
``stage_lr(epoch)`` at the start of every epoch; that call also moves the loss into the epoch's
stage: CE for the first ``warmup_epochs`` epochs (the schedule's lr), then DMI at ``lr``
(the official CIFAR-10 protocol: 120 CE epochs, then DMI with SGD lr 1e-6).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import papers
from .base import POSITIVE, Integer, Loss, register_loss


class _DMI(torch.autograd.Function):
    """One LU factorisation serves the determinant and, in backward, ``M^{-T}``:
    ``d/dM -log(|det M| + c) = -|det M| / (|det M| + c) * M^{-T}`` (0 where det M = 0, as
    autograd's ``abs`` gives at 0)."""

    @staticmethod
    def forward(ctx, logits, labels, offset):
        p = torch.softmax(logits, dim=1)
        k = logits.shape[1]
        joint = torch.zeros(k, k, dtype=p.dtype, device=p.device).index_add_(0, labels, p)  # Y^T P
        lu, pivots, _ = torch.linalg.lu_factor_ex(joint)  # a singular matrix is allowed: det 0
        swaps = (pivots != torch.arange(1, k + 1, device=pivots.device, dtype=pivots.dtype)).sum()
        det = lu.diagonal().prod() * (1 - 2 * (swaps % 2))
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(lu, pivots, det, p, labels)
            ctx.offset = offset
        return -torch.log(det.abs() + offset)

    @staticmethod
    def backward(ctx, grad_value):
        lu, pivots, det, p, labels = ctx.saved_tensors
        if det == 0:
            return torch.zeros_like(p), None, None
        eye = torch.eye(lu.shape[0], dtype=lu.dtype, device=lu.device)
        inverse_t = torch.linalg.lu_solve(lu, pivots, eye, adjoint=True)
        grad_joint = inverse_t * (-det.abs() / (det.abs() + ctx.offset) * grad_value)
        grad_p = grad_joint.index_select(0, labels)
        return p * (grad_p - (p * grad_p).sum(1, keepdim=True)), None, None


class DMILoss(Loss):
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
        return _DMI.apply(logits, labels, self.det_offset)


@register_loss("dmi", family="combined", bounded=False, papers=[papers.DMI, papers.APL],
               warmup_epochs=Integer(0), lr=POSITIVE, det_offset=POSITIVE)
def dmi(num_classes: int, warmup_epochs: int = 120, lr: float = 1e-6, det_offset: float = 1e-3):
    return DMILoss(warmup_epochs, lr, det_offset)
