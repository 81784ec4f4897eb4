"""L_DMI (Xu et al. 2019): a CE warm-up, then ``-log(|det(Y^T P)| + 0.001)`` at a fixed small lr.

The value depends on the whole batch (``per_sample = False``). The trainer calls
``stage_lr(epoch)`` at the start of every epoch; that call also moves the loss into the epoch's
stage: CE for the first ``warmup_epochs`` epochs (the schedule's lr), then DMI at ``lr``
(the official CIFAR-10 protocol: 120 CE epochs, then DMI with SGD lr 1e-6).

With many classes the DMI stage can have no gradient at all. A batch that misses a class leaves
a zero row in ``Y^T P``, so det = 0 and the loss is the constant ``-log(0.001)``: at 100 classes
a batch of 128 holds every class with probability 1.5e-22 (a run logs this, see
``batch_size_warning``). Even with every class present, ``|det|`` of a 100 x 100 matrix of
probabilities is often below float32's range (about 1e-55 for random logits), as in the code's
``torch.det(mat.float())``. The model then stays as the CE warm-up left it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import papers
from .base import POSITIVE, Constants, HandWrittenLoss, Integer, register_loss


class DMILoss(HandWrittenLoss):
    per_sample = False
    compilable = False  # its LU runs in SciPy's LAPACK on the CPU

    def __init__(self, num_classes: int, warmup_epochs: int, lr: float, det_offset: float):
        super().__init__()
        self.num_classes = num_classes
        self.warmup_epochs, self.lr, self.det_offset = warmup_epochs, lr, det_offset
        self.epoch = 0

    def batch_size_warning(self, batch_size: int) -> str | None:
        if batch_size < self.num_classes:
            return (f"loss=dmi: a batch of {batch_size} cannot hold all {self.num_classes} classes, so "
                    "det(Y^T P) = 0 in every batch and the DMI stage has no gradient at all")
        every_class = probability_of_every_class(batch_size, self.num_classes)
        if every_class >= 0.99:
            return None
        return (f"loss=dmi: a batch of {batch_size} holds all {self.num_classes} classes with probability "
                f"{every_class:.2g} (uniform labels); in a batch without some class det(Y^T P) = 0 and the DMI "
                "loss has no gradient, so the DMI stage trains on that fraction of its batches")

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
        row in ``M = Y^T P``: det M is exactly 0, as the code's LU finds it."""
        k = logits.shape[1]
        p = torch.softmax(logits, dim=1)
        joint = p.new_zeros(k, k).index_add_(0, labels, p)  # Y^T P
        factors = _LUFactors(joint, overwrite=True)
        size = factors.abs_det()
        shifted = torch.add(size, Constants(p)(self.det_offset))
        value = shifted.log().neg_()
        if not need_grad:
            return value, None
        if factors.lapack and not size:  # on the host already: skip the inverse
            return value, torch.zeros_like(p)
        grad_joint = factors.inverse_t().mul_(size.div(shifted).neg_())
        if not factors.lapack:
            # On a GPU, branching on det would make every step wait for the device. A singular
            # M's inverse is inf or nan there; its gradient is 0.
            grad_joint = torch.where(size > 0, grad_joint, 0.0)
        grad_p = grad_joint.index_select(0, labels)
        return value, grad_p.sub_((p * grad_p).sum(1, keepdim=True)).mul_(p)


def probability_of_every_class(batch_size: int, num_classes: int) -> float:
    """The probability that ``batch_size`` labels drawn uniformly from ``num_classes`` classes
    include every class: the distribution of the number of distinct classes seen, draw by draw."""
    seen = np.arange(num_classes + 1)
    distinct = np.zeros(num_classes + 1)
    distinct[0] = 1.0
    for _ in range(batch_size):
        grown = distinct * (seen / num_classes)  # an already seen class
        grown[1:] += distinct[:-1] * ((num_classes - seen[:-1]) / num_classes)  # a new one
        distinct = grown
    return float(distinct[num_classes])


class _LUFactors:
    """The LU factors of a square matrix M, for ``|det M|`` and ``M^{-T}``.

    On the CPU through SciPy's LAPACK: ``getrf`` factors M^T (M's row-major memory is M^T's
    column-major, so no transpose is copied) and ``getri`` inverts from the factors, which gives
    M^{-T} directly. torch has no ``getri``: ``lu_solve`` against the identity does half again
    the flops and, with ``lu_factor``, takes about twice the time at 100 x 100. Elsewhere (a GPU)
    torch's own ``lu_factor`` and ``lu_solve``. A singular M factors as well (det 0).
    """

    def __init__(self, matrix: torch.Tensor, lapack: bool | None = None, overwrite: bool = False):
        """``overwrite``: the matrix is a temporary that LAPACK may factor in place."""
        self.lapack = matrix.device.type == "cpu" if lapack is None else lapack
        if self.lapack:
            from scipy.linalg import lapack

            prefix = "s" if matrix.dtype == torch.float32 else "d"
            self._getri = getattr(lapack, prefix + "getri")
            lu, self.pivots, _ = getattr(lapack, prefix + "getrf")(matrix.numpy().T, overwrite_a=overwrite)
            self.lu = torch.from_numpy(lu)  # M^T's factors: det M^T = det M
        else:
            self.lu, self.pivots, _ = torch.linalg.lu_factor_ex(matrix)

    def abs_det(self) -> torch.Tensor:
        """The product of U's diagonal; the row swaps only flip its sign."""
        return self.lu.diagonal().prod().abs()

    def inverse_t(self) -> torch.Tensor:
        """``M^{-T}``, a tensor the caller may modify."""
        if self.lapack:
            inverse, _ = self._getri(self.lu.numpy(), self.pivots, overwrite_lu=True)
            return torch.from_numpy(inverse)
        eye = torch.eye(len(self.lu), dtype=self.lu.dtype, device=self.lu.device)
        return torch.linalg.lu_solve(self.lu, self.pivots, eye, adjoint=True)


@register_loss("dmi", family="combined", bounded=False, papers=[papers.DMI, papers.APL],
               warmup_epochs=Integer(0), lr=POSITIVE, det_offset=POSITIVE)
def dmi(num_classes: int, warmup_epochs: int = 120, lr: float = 1e-6, det_offset: float = 1e-3):
    return DMILoss(num_classes, warmup_epochs, lr, det_offset)
