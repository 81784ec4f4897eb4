"""CIFAR-10 and CIFAR-100 from the "python version" pickle batches (torchvision's layout).

``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``<root>/cifar-100-python/{train, test, meta}``, as the official tar.gz archives unpack. Each batch
is a pickled dict: ``data`` uint8 [N, 3072] (per image the 1024 red, then green, then blue values,
rows top to bottom), ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100, whose 100 fine classes
are the ones the papers train on). The md5s are those of torchvision's ``train_list``,
``test_list`` and ``meta``. The files are pickles, so only load ones from a trusted source.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisybench.data.base import DATASETS, HOW_TO_REPLACE, Dataset, check_content, obtain_files
from noisybench.registry import ConfigError

IMAGE_SHAPE = (3, 32, 32)


@dataclass(frozen=True)
class CifarDataset:
    name: str
    folder: str  # under data.root, as the archive unpacks
    torchvision_class: str
    archive_url: str
    train_files: tuple[tuple[str, str], ...]  # (file name, md5)
    test_files: tuple[tuple[str, str], ...]
    meta_file: tuple[str, str]
    label_key: str
    names_key: str  # in the meta file
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR10 = CifarDataset(
    name="cifar10",
    folder="cifar-10-batches-py",
    torchvision_class="CIFAR10",
    archive_url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    train_files=(
        ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
        ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
        ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
        ("data_batch_4", "634d18415352ddfa80567beed471001a"),
        ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
    ),
    test_files=(("test_batch", "40351d587109b95175f43aff81a1287e"),),
    meta_file=("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
    label_key="labels",
    names_key="label_names",
    num_classes=10,
    # Reference §5.2, as in APL, ALFs, ANL, JAL and ε-softmax.
    mean=(0.49139968, 0.48215827, 0.44653124),
    std=(0.24703233, 0.24348505, 0.26158768),
)

CIFAR100 = CifarDataset(
    name="cifar100",
    folder="cifar-100-python",
    torchvision_class="CIFAR100",
    archive_url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    train_files=(("train", "16019d7e3df5f24257cddd939b257f8d"),),
    test_files=(("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
    meta_file=("meta", "7973b15100ade9c7d40fb424638fde48"),
    label_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
    # Reference §5.2.
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
)


def as_text(value: Any) -> Any:
    """Keys and class names are bytes in files pickled by Python 3 code and str in the originals."""
    return value.decode("latin1") if isinstance(value, bytes) else value


def read_pickle(path: Path, md5: str, verify: bool) -> dict[str, Any]:
    content = path.read_bytes()
    if verify:
        check_content(path, content, md5)
    try:
        # latin1 is how Python 3 reads the numpy arrays the original Python 2 pickles hold.
        entry = pickle.loads(content, encoding="latin1")
    except Exception as err:  # any unpickling failure means the same thing: not a CIFAR file
        raise ConfigError(f"{path} is not a readable CIFAR pickle ({type(err).__name__}: {err}); "
                          f"{HOW_TO_REPLACE}") from err
    if not isinstance(entry, dict):
        raise ConfigError(f"{path} holds a {type(entry).__name__}, expected a dict; {HOW_TO_REPLACE}")
    return {as_text(k): v for k, v in entry.items()}


def read_batches(spec: CifarDataset, paths: dict[str, Path], files: tuple[tuple[str, str], ...],
                 verify: bool) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for name, md5 in files:
        entry = read_pickle(paths[name], md5, verify)
        data = np.asarray(entry.get("data"))
        targets = np.asarray(entry.get(spec.label_key, []), dtype=np.int64)
        well_formed = data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == np.prod(IMAGE_SHAPE)
        if not well_formed or len(targets) != len(data):
            raise ConfigError(f"{paths[name]} is not a CIFAR batch: needs 'data' uint8 [N, 3072] and N "
                              f"'{spec.label_key}', found {data.dtype} {data.shape} and {len(targets)} labels")
        if targets.size and not 0 <= targets.min() <= targets.max() < spec.num_classes:
            raise ConfigError(f"{paths[name]} holds labels outside 0..{spec.num_classes - 1}")
        images.append(data)
        labels.append(targets)
    x = np.concatenate(images).reshape(-1, *IMAGE_SHAPE)
    return torch.from_numpy(x), torch.from_numpy(np.concatenate(labels))


def load_cifar(spec: CifarDataset, root: Path, download: bool, verify: bool) -> Dataset:
    names = [name for name, _ in spec.train_files + spec.test_files + (spec.meta_file,)]
    paths = obtain_files(spec.name, [root / spec.folder], names, root=root, download=download,
                         torchvision_class=spec.torchvision_class,
                         other_sources=f"unpack {spec.archive_url} into {root}")
    train_x, train_y = read_batches(spec, paths, spec.train_files, verify)
    test_x, test_y = read_batches(spec, paths, spec.test_files, verify)
    meta_name, meta_md5 = spec.meta_file
    classes = [as_text(c) for c in read_pickle(paths[meta_name], meta_md5, verify).get(spec.names_key, [])]
    if len(classes) != spec.num_classes:
        raise ConfigError(f"{paths[meta_name]} lists {len(classes)} '{spec.names_key}', expected {spec.num_classes}")
    return Dataset(name=spec.name, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                   classes=classes, mean=spec.mean, std=spec.std)


@DATASETS.register("cifar10", num_classes=10, input_shape=IMAGE_SHAPE, train_count=50000, test_count=10000)
def cifar10(root: Path, download: bool, verify: bool) -> Dataset:
    return load_cifar(CIFAR10, root, download, verify)


@DATASETS.register("cifar100", num_classes=100, input_shape=IMAGE_SHAPE, train_count=50000, test_count=10000)
def cifar100(root: Path, download: bool, verify: bool) -> Dataset:
    return load_cifar(CIFAR100, root, download, verify)
