"""L_DMI (Xu et al. 2019): a CE warm-up, then ``-log(|det(Y^T P)| + 0.001)`` at a fixed small lr.

The value depends on the whole batch (``batch=True``). Its training settings: CE for the first
``warmup_epochs`` epochs (the schedule's lr), then DMI at ``lr`` (the official CIFAR-10
protocol: 120 CE epochs, then DMI with SGD lr 1e-6).

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
from .base import POSITIVE, one_hot, register_loss


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


def dmi_batch_size_warning(batch_size: int, num_classes: int) -> str | None:
    if batch_size < num_classes:
        return (f"loss=dmi: a batch of {batch_size} cannot hold all {num_classes} classes, so "
                "det(Y^T P) = 0 in every batch and the DMI stage has no gradient at all")
    every_class = probability_of_every_class(batch_size, num_classes)
    if every_class >= 0.99:
        return None
    return (f"loss=dmi: a batch of {batch_size} holds all {num_classes} classes with probability "
            f"{every_class:.2g} (uniform labels); in a batch without some class det(Y^T P) = 0 and the DMI "
            "loss has no gradient, so the DMI stage trains on that fraction of its batches")


@register_loss(family="combined", bounded=False, papers=[papers.DMI, papers.APL], batch=True,
               settings={"warmup_epochs": 120, "lr": 1e-6}, batch_size_warning=dmi_batch_size_warning,
               det_offset=POSITIVE)
def dmi(logits, labels, det_offset=1e-3):
    """``-log(|det(Y^T P)| + det_offset)`` over the batch. A class without a sample in the batch
    leaves a zero row in ``Y^T P``: det is exactly 0, and ``abs``' gradient at 0 is 0."""
    p = F.softmax(logits, dim=1)
    joint = one_hot(labels, p).T @ p  # Y^T P
    return -torch.log(torch.abs(torch.linalg.det(joint)) + det_offset)
