"""The dataset table, the in-memory ``Dataset`` record, config checks and the shared file handling.

Every loader returns whole splits as tensors (uint8 images ``[N, C, H, W]``, int64 labels), so the
trainer can keep them on its device and augment in batches. Loaders find their files in the
standard torchvision layouts under ``data.root``, fetch them with torchvision's downloaders when
``data.download`` is true, and check them against the published md5s when ``dataset.verify`` is
true. Anything wrong with the files ends in a one-line ``ConfigError`` that says what to do.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from noisybench.data.augment import AUGMENTATIONS
from noisybench.registry import ConfigError, Registry

# Registered with meta: num_classes, input_shape (C, H, W), train_count and test_count (split sizes,
# used to check train_size / test_size without loading anything).
DATASETS = Registry("dataset")

# Seed of the class-stratified train_size / test_size subsets. A fixed constant, so a quick run on a
# subset sees the same images whatever the training seed or the noise seed.
SUBSET_SEED = 20200705

ROOT_ENV = "NOISYBENCH_DATA"
ROOT_DEFAULT = "~/.cache/noisybench"

# How a user gets missing files; ends every missing-files message.
HOW_TO_DOWNLOAD = "set data.download=true to fetch them with torchvision"
HOW_TO_POINT = (f"point data.root=<folder> (default: env {ROOT_ENV}, else {ROOT_DEFAULT}) "
                f"at a folder that holds them")
# What to do with a file that fails its checks.
HOW_TO_REPLACE = ("delete it and fetch it again (data.download=true) or replace it with the original, "
                  "or set dataset.verify=false to load it unchecked")


@dataclasses.dataclass
class Dataset:
    """Both splits of one dataset, in memory. ``mean``/``std`` are per-channel normalisation
    constants in [0, 1] pixel units (the papers' values where they have them)."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dtype != torch.uint8 or x.dim() != 4 or not x.is_contiguous():
                raise ValueError(f"{self.name} {split}_x must be a contiguous uint8 [N,C,H,W] tensor, "
                                 f"got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(f"{self.name} {split}_y must be int64 [{x.shape[0]}], got {y.dtype} {tuple(y.shape)}")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(f"{self.name}: train and test images differ in shape")
        if not len(self.mean) == len(self.std) == self.train_x.shape[1]:
            raise ValueError(f"{self.name}: mean/std need one value per channel")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])


def default_root() -> Path:
    """``$NOISYBENCH_DATA`` if set and non-empty, else ``~/.cache/noisybench``; user-expanded."""
    return Path(os.environ.get(ROOT_ENV) or ROOT_DEFAULT).expanduser()


def check_dataset(cfg: Mapping[str, Any]) -> None:
    """Validate a ``dataset`` config group without touching any file; raises ``ConfigError``."""
    name = cfg.get("name")
    meta = DATASETS.meta(name)
    augment = cfg.get("augment", "none")
    if augment not in AUGMENTATIONS:
        raise ConfigError(f"dataset.augment '{augment}' is not known; allowed: {', '.join(AUGMENTATIONS)}")
    for split in ("train", "test"):
        size = cfg.get(f"{split}_size")
        total = meta[f"{split}_count"]
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= total):
            raise ConfigError(f"dataset.{split}_size={size!r} is not allowed for {name}; allowed: null "
                              f"(the whole split) or an integer from 1 to {total}")
    verify = cfg.get("verify", True)
    if not isinstance(verify, bool):
        raise ConfigError(f"dataset.verify={verify!r} is not allowed; allowed: true or false")


def load_dataset(cfg: Mapping[str, Any], root: str | os.PathLike | None = None, download: bool = False) -> Dataset:
    """Check ``cfg``, load the dataset it names from ``root`` (None: ``default_root()``), and keep
    the train_size / test_size subsets it asks for."""
    check_dataset(cfg)
    root = Path(root).expanduser() if root not in (None, "") else default_root()
    dataset = DATASETS.get(cfg["name"])(root=root, download=bool(download), verify=cfg.get("verify", True))
    for split_index, split in enumerate(("train", "test")):
        size = cfg.get(f"{split}_size")
        if size is None:
            continue
        labels = getattr(dataset, f"{split}_y")
        if size > len(labels):
            raise ConfigError(f"dataset.{split}_size={size} exceeds the {len(labels)} {split} samples "
                              f"of {dataset.name} found under {root}")
        keep = torch.from_numpy(stratified_subset(labels.numpy(), size,
                                                  np.random.default_rng([SUBSET_SEED, split_index])))
        images = getattr(dataset, f"{split}_x")
        dataset = dataclasses.replace(dataset, **{f"{split}_x": images[keep].contiguous(), f"{split}_y": labels[keep]})
    return dataset


def stratified_subset(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Ascending indices of ``size`` samples whose class counts follow those of ``labels``.

    Each class gets floor(size * n_c / N) samples; the few left over go to the classes with the
    largest remainders (ties to the lower class). Within a class the samples are drawn by ``rng``.
    """
    classes, counts = np.unique(labels, return_counts=True)
    exact = size * counts / len(labels)
    take = np.floor(exact).astype(np.int64)
    leftover = size - int(take.sum())
    take[np.argsort(take - exact, kind="stable")[:leftover]] += 1
    chosen = [rng.choice(np.flatnonzero(labels == c), k, replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


def check_content(path: Path, content: bytes, md5: str, size: int | None = None) -> None:
    """Raise ``ConfigError`` when ``content`` (read from ``path``) lacks the published size or md5."""
    if size is not None and len(content) != size:
        raise ConfigError(f"{path} has the wrong size: {len(content)} bytes, expected {size}; {HOW_TO_REPLACE}")
    actual = hashlib.md5(content).hexdigest()
    if actual != md5:
        raise ConfigError(f"{path} fails its checksum: md5 {actual}, expected {md5}; {HOW_TO_REPLACE}")


def find_files(folders: Sequence[Path], names: Sequence[str],
               variants: Sequence[str] = ("",)) -> dict[str, Path] | None:
    """The paths of all ``names`` in the first folder that holds every one of them, else None.

    A file may exist as ``name + variant`` for any of ``variants``; the first one found wins.
    """
    for folder in folders:
        found = {}
        for name in names:
            path = next((folder / (name + v) for v in variants if (folder / (name + v)).is_file()), None)
            if path is None:
                break
            found[name] = path
        else:
            return found
    return None


def obtain_files(dataset: str, folders: Sequence[Path], names: Sequence[str], *, root: Path, download: bool,
                 torchvision_class: str, variants: Sequence[str] = ("",), other_sources: str = "") -> dict[str, Path]:
    """Find ``names`` in ``folders``; if absent and ``download``, fetch them with
    ``torchvision.datasets.<torchvision_class>(root, download=True)``, whose layout is ``folders[0]``.

    Raises ``ConfigError`` naming the expected paths and how to get them.
    """
    found = find_files(folders, names, variants)
    failure = ""
    if found is None and download:
        try:
            fetch_with_torchvision(torchvision_class, root)
        except Exception as err:  # network, permission and checksum failures all end in the same advice
            reason = " ".join(str(err).split())[:300]
            failure = f" (download into {root} failed: {type(err).__name__}: {reason})"
        found = find_files(folders, names, variants)
    if found is None:
        optional = [v for v in variants if v]
        suffix = f"[{'|'.join(optional)}]" if optional else ""
        missing = [folders[0] / (n + suffix) for n in names if find_files(folders[:1], [n], variants) is None]
        remedies = ([] if download else [HOW_TO_DOWNLOAD]) + [HOW_TO_POINT] + ([other_sources] if other_sources else [])
        advice = ", or ".join(remedies)
        raise ConfigError(f"{dataset} files missing{failure}: {', '.join(map(str, missing))}; {advice}")
    return found


def fetch_with_torchvision(torchvision_class: str, root: Path) -> None:
    """Download and unpack a dataset into ``root`` in torchvision's layout."""
    import torchvision.datasets  # imported here: it is slow to import and only downloads need it

    root.mkdir(parents=True, exist_ok=True)
    getattr(torchvision.datasets, torchvision_class)(str(root), train=True, download=True)
