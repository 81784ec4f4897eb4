"""Datasets: digits (embedded), mnist, fashion_mnist, cifar10, cifar100, loaded whole into tensors.

``load_dataset(cfg.dataset, cfg.data.root, cfg.data.download)`` returns a ``Dataset`` with uint8
images [N, C, H, W], int64 labels, class names and the papers' normalisation constants;
``check_dataset(cfg.dataset)`` validates the config group without reading any file.
"""
from noisybench.data.base import (
    DATASETS,
    SUBSET_SEED,
    Dataset,
    check_dataset,
    default_root,
    load_dataset,
    stratified_subset,
)

# Importing the loader modules registers their datasets.
from noisybench.data import cifar, digits, idx  # noqa: E402,F401  isort: skip

__all__ = ["DATASETS", "SUBSET_SEED", "Dataset", "check_dataset", "default_root", "load_dataset",
           "stratified_subset"]
