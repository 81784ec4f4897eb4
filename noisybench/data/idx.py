"""MNIST and Fashion-MNIST, read straight from the IDX files (gzip-compressed or not).

Layout (torchvision's): ``<root>/MNIST/raw/`` and ``<root>/FashionMNIST/raw/`` holding
``{train,t10k}-{images-idx3,labels-idx1}-ubyte`` or the same names with ``.gz``; an uncompressed
file is preferred when both exist (it loads faster). Fashion-MNIST is also read from
``/usr/share/datasets/fashion-mnist/`` (Debian package ``dataset-fashion-mnist``).

The checksums cover the decompressed IDX bytes. torchvision lists md5s of the original ``.gz``
archives, but a copy recompressed by another tool (the Debian package does this) holds the same
IDX bytes in a gzip file with a different md5; torchvision's downloader checks its archives itself.
"""
from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from noisybench.data.base import DATASETS, HOW_TO_REPLACE, Dataset, check_content, obtain_files
from noisybench.registry import ConfigError

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

# IDX magic numbers: two zero bytes, the element type (0x08 = unsigned byte), the number of dimensions.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


@dataclass(frozen=True)
class IdxFile:
    name: str
    size: int  # bytes of the decompressed file
    md5: str  # of the decompressed file


@dataclass(frozen=True)
class IdxDataset:
    name: str
    folder: str  # under data.root, as torchvision lays it out
    torchvision_class: str
    train_images: IdxFile
    train_labels: IdxFile
    test_images: IdxFile
    test_labels: IdxFile
    classes: tuple[str, ...]
    mean: float
    std: float


MNIST = IdxDataset(
    name="mnist",
    folder="MNIST/raw",
    torchvision_class="MNIST",
    train_images=IdxFile("train-images-idx3-ubyte", 47040016, "6bbc9ace898e44ae57da46a324031adb"),
    train_labels=IdxFile("train-labels-idx1-ubyte", 60008, "a25bea736e30d166cdddb491f175f624"),
    test_images=IdxFile("t10k-images-idx3-ubyte", 7840016, "2646ac647ad5339dbf082846283269ea"),
    test_labels=IdxFile("t10k-labels-idx1-ubyte", 10008, "27ae3e4e09519cfbb04c329615203637"),
    classes=tuple(str(d) for d in range(10)),
    # Reference §5.2: Normalize([0.1307], [0.3081]) in every paper.
    mean=0.1307,
    std=0.3081,
)

FASHION_MNIST = IdxDataset(
    name="fashion_mnist",
    folder="FashionMNIST/raw",
    torchvision_class="FashionMNIST",
    train_images=IdxFile("train-images-idx3-ubyte", 47040016, "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    train_labels=IdxFile("train-labels-idx1-ubyte", 60008, "9018921c3c673c538a1fc5bad174d6f9"),
    test_images=IdxFile("t10k-images-idx3-ubyte", 7840016, "8181f5470baa50b63fa0f6fddb340f0a"),
    test_labels=IdxFile("t10k-labels-idx1-ubyte", 10008, "15d484375f8d13e6eb1aabb0c3f46965"),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    # The reference papers do not use Fashion-MNIST; these are the common constants, the mean and
    # std of the train pixels (0.28604, 0.35302) rounded as MNIST's are.
    mean=0.2860,
    std=0.3530,
)


def read_idx(path: Path, magic: int, expected: IdxFile, verify: bool) -> np.ndarray:
    """The array stored in one unsigned-byte IDX file, checked against its header (and, with
    ``verify``, against the published size and md5)."""
    content = path.read_bytes()
    if path.suffix == ".gz":
        try:
            content = gzip.decompress(content)
        except (OSError, EOFError, zlib.error) as err:
            raise ConfigError(f"{path} is corrupt: its gzip stream fails to decompress or fails its "
                              f"CRC checksum ({err}); {HOW_TO_REPLACE}") from err
    if verify:
        check_content(path, content, expected.md5, expected.size)
    found_magic = int.from_bytes(content[:4], "big")
    if found_magic != magic:
        raise ConfigError(f"{path} is not the IDX file expected: magic number {found_magic:#010x}, "
                          f"expected {magic:#010x}; {HOW_TO_REPLACE}")
    ndim = magic & 0xFF
    offset = 4 + 4 * ndim
    # A truncated header reads as zero dimensions and then fails the size check.
    dims = tuple(int(d) for d in np.frombuffer(content[:offset].ljust(offset, b"\0"), ">u4", offset=4))
    if len(content) != offset + int(np.prod(dims)):
        raise ConfigError(f"{path} has the wrong size: {len(content)} bytes where its header {dims} needs "
                          f"{offset + int(np.prod(dims))}; {HOW_TO_REPLACE}")
    # frombuffer views read-only bytes; the copy gives torch a writable array.
    return np.frombuffer(content, np.uint8, offset=offset).reshape(dims).copy()


def load_split(paths: dict[str, Path], images: IdxFile, labels: IdxFile, num_classes: int,
               verify: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x = read_idx(paths[images.name], IMAGES_MAGIC, images, verify)
    y = read_idx(paths[labels.name], LABELS_MAGIC, labels, verify)
    if x.shape[1:] != (28, 28) or len(x) != len(y):
        raise ConfigError(f"{paths[images.name]} holds images of shape {x.shape} for {len(y)} labels in "
                          f"{paths[labels.name]}; expected [N, 28, 28] with one label each")
    if y.max(initial=0) >= num_classes:
        raise ConfigError(f"{paths[labels.name]} holds label {y.max()}; allowed 0..{num_classes - 1}")
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def idx_paths(spec: IdxDataset, root: Path, download: bool, extra_folders: tuple[Path, ...] = (),
              other_sources: str = "") -> dict[str, Path]:
    """The dataset's four IDX files by name, as found (or downloaded) under ``root``."""
    files = (spec.train_images, spec.train_labels, spec.test_images, spec.test_labels)
    return obtain_files(spec.name, [root / spec.folder, *extra_folders], [f.name for f in files], root=root,
                        download=download, torchvision_class=spec.torchvision_class, variants=("", ".gz"),
                        other_sources=other_sources)


def load_idx_dataset(spec: IdxDataset, root: Path, download: bool, verify: bool,
                     extra_folders: tuple[Path, ...] = (), other_sources: str = "") -> Dataset:
    paths = idx_paths(spec, root, download, extra_folders, other_sources)
    train_x, train_y = load_split(paths, spec.train_images, spec.train_labels, len(spec.classes), verify)
    test_x, test_y = load_split(paths, spec.test_images, spec.test_labels, len(spec.classes), verify)
    return Dataset(name=spec.name, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                   classes=list(spec.classes), mean=(spec.mean,), std=(spec.std,))


@DATASETS.register("mnist", num_classes=10, input_shape=(1, 28, 28), train_count=60000, test_count=10000)
def mnist(root: Path, download: bool, verify: bool) -> Dataset:
    return load_idx_dataset(MNIST, root, download, verify)


@DATASETS.register("fashion_mnist", num_classes=10, input_shape=(1, 28, 28), train_count=60000, test_count=10000)
def fashion_mnist(root: Path, download: bool, verify: bool) -> Dataset:
    return load_idx_dataset(
        FASHION_MNIST, root, download, verify, extra_folders=(FASHION_MNIST_SYSTEM_DIR,),
        other_sources=f"apt-get install dataset-fashion-mnist (reads {FASHION_MNIST_SYSTEM_DIR}/)")
