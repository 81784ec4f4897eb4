"""scikit-learn's 8x8 handwritten digits: the embedded default dataset, no files, works offline.

1,797 images with values 0..16 (counts of set pixels in 4x4 blocks of the 32x32 originals). They
become uint8 by round(v * 255 / 16), halves rounded up (16 -> 255, 8 -> 128, 1 -> 16), so the
images share the 0..255 scale of the other datasets. The split is fixed: a stratified 75/25 split
by ``sklearn.model_selection.train_test_split(random_state=0)``, 1,347 train / 450 test images,
each split kept in the original order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from noisybench.data.base import DATASETS, Dataset

TEST_FRACTION = 0.25
SPLIT_SEED = 0


def digits_to_uint8(values: np.ndarray) -> np.ndarray:
    return np.floor(values * 255 / 16 + 0.5).astype(np.uint8)


@DATASETS.register("digits", num_classes=10, input_shape=(1, 8, 8), train_count=1347, test_count=450)
def digits(root: Path, download: bool, verify: bool) -> Dataset:
    """``root``, ``download`` and ``verify`` are unused: scikit-learn ships the data."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy(digits_to_uint8(bunch.images)).unsqueeze(1).contiguous()
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION,
                                           random_state=SPLIT_SEED, stratify=bunch.target)
    train_idx, test_idx = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))
    train_x = images[train_idx].contiguous()
    # No paper fixes constants for these images: mean and (population) std of the train pixels.
    train_pixels = train_x.double() / 255
    return Dataset(
        name="digits",
        train_x=train_x,
        train_y=labels[train_idx],
        test_x=images[test_idx].contiguous(),
        test_y=labels[test_idx],
        classes=[str(d) for d in range(10)],
        mean=(train_pixels.mean().item(),),
        std=(train_pixels.std(correction=0).item(),),
    )
