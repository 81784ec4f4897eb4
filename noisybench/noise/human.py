"""Human label noise: the CIFAR-10N / CIFAR-100N annotations (Wei et al., ICLR 2022).

The label files come from the official repository ``UCSC-REAL/cifar-10-100n`` into
``<data.root>/CIFAR-N/`` (only with ``data.download=true``; they are CC BY-NC 4.0 and never part
of this repository). Size and md5 are checked before the file is unpickled. Each file is a
``torch.save``'d dict of numpy int64 arrays in torchvision's CIFAR train order; unpickling numpy
arrays needs ``torch.load(..., weights_only=False)`` since PyTorch 2.6 made ``True`` the default.
The file's ``clean_label`` must equal the dataset's train labels, which catches a train split in
another order. ``noise.rate`` stays 0: the annotators fixed the noise (CIFAR-10N aggre 9.01 %,
random1-3 ≈ 17-18 %, worse 40.21 %; CIFAR-100N noisy 40.20 %).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from noisybench.noise.base import NOISE, NoiseContext
from noisybench.registry import ConfigError

CIFAR_N_URL = "https://github.com/UCSC-REAL/cifar-10-100n/raw/main/data/{filename}"
CIFAR_N_DIR = "CIFAR-N"


@dataclass(frozen=True)
class CifarNFile:
    filename: str
    size: int  # bytes
    md5: str
    labels: dict[str, str]  # noise.key → the array's name inside the file
    default_key: str

    @property
    def url(self) -> str:
        return CIFAR_N_URL.format(filename=self.filename)


# The expected files, by dataset name (the one table the loader and its checks read).
CIFAR_N_FILES: dict[str, CifarNFile] = {
    "cifar10": CifarNFile(
        filename="CIFAR-10_human.pt",
        size=2_401_007,
        md5="96644db5574813cae939af5f7f2a0aec",
        labels={
            "aggre": "aggre_label",
            "worse": "worse_label",
            "random1": "random_label1",
            "random2": "random_label2",
            "random3": "random_label3",
        },
        default_key="aggre",
    ),
    "cifar100": CifarNFile(
        filename="CIFAR-100_human.pt",
        size=1_000_959,
        md5="a67b45c1d7992051865b5c755bd68bb1",
        labels={"noisy": "noisy_label"},
        default_key="noisy",
    ),
}
# The names the official CIFAR-N training script uses on its command line.
KEY_ALIASES = {"worst": "worse", "rand1": "random1", "rand2": "random2", "rand3": "random3"}


def resolve_key(dataset: str, key: str | None) -> str:
    """The CIFAR-N label set ``key`` names for ``dataset`` (``None`` → the dataset's default)."""
    spec = CIFAR_N_FILES[dataset]
    resolved = spec.default_key if key is None else KEY_ALIASES.get(key, key)
    if resolved not in spec.labels:
        raise ConfigError(
            f"noise.key={key!r} is not a {dataset} CIFAR-N label set; allowed: {', '.join(spec.labels)}"
        )
    return resolved


def _check_human(fields: dict, dataset: str, num_classes: int) -> None:
    if dataset not in CIFAR_N_FILES:
        raise ConfigError(
            f"human noise is not available for dataset {dataset}; allowed datasets: {', '.join(CIFAR_N_FILES)}"
        )
    resolve_key(dataset, fields["key"])


def cifar_n_path(root: Path, dataset: str) -> Path:
    return Path(root) / CIFAR_N_DIR / CIFAR_N_FILES[dataset].filename


def verify_cifar_n_file(path: Path, spec: CifarNFile) -> None:
    """Raise ConfigError unless ``path`` has the expected size and md5."""
    size = path.stat().st_size
    if size != spec.size:
        raise ConfigError(
            f"CIFAR-N file {path} has {size} bytes, expected {spec.size}; delete it and rerun with data.download=true"
        )
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    if md5 != spec.md5:
        raise ConfigError(
            f"CIFAR-N file {path} has md5 {md5}, expected {spec.md5}; delete it and rerun with data.download=true"
        )


def _download(path: Path, spec: CifarNFile) -> None:
    from torchvision.datasets.utils import download_url

    try:
        download_url(spec.url, root=str(path.parent), filename=spec.filename, md5=spec.md5)
    except (OSError, RuntimeError) as err:
        raise ConfigError(f"could not download {spec.url} to {path} ({err}); place the file there by hand") from err


def load_cifar_n(dataset: str, key: str | None, root: Path, download: bool = False) -> dict[str, np.ndarray]:
    """The CIFAR-N arrays for ``dataset``: ``{"clean": ..., "noisy": ...}`` for the label set ``key``."""
    import torch

    spec = CIFAR_N_FILES[dataset]
    path = cifar_n_path(root, dataset)
    if not path.is_file():
        if not download:
            raise ConfigError(
                f"CIFAR-N labels not found at {path}; rerun with data.download=true to fetch {spec.url}"
            )
        _download(path, spec)
    verify_cifar_n_file(path, spec)
    arrays = torch.load(path, map_location="cpu", weights_only=False)  # numpy arrays inside the pickle
    name = spec.labels[resolve_key(dataset, key)]
    return {
        "clean": np.asarray(arrays["clean_label"], dtype=np.int64),
        "noisy": np.asarray(arrays[name], dtype=np.int64),
    }


@NOISE.register("human", rates="0", fields={"key": None}, check=_check_human)
def human(
    clean: np.ndarray, rate: float, rng: np.random.Generator, ctx: NoiseContext, key: str | None = None
) -> np.ndarray:
    if ctx.root is None:
        from noisybench.data import default_root

        root = default_root()
    else:
        root = ctx.root
    labels = load_cifar_n(ctx.dataset, key, root, ctx.download)
    path = cifar_n_path(root, ctx.dataset)
    if labels["noisy"].shape != clean.shape or labels["clean"].shape != clean.shape:
        raise ConfigError(
            f"CIFAR-N labels in {path} have length {labels['noisy'].shape[0]}, the {ctx.dataset} train set "
            f"{clean.shape[0]}; human noise needs the full train split"
        )
    mismatched = int((labels["clean"] != clean).sum())
    if mismatched:
        raise ConfigError(
            f"CIFAR-N clean labels in {path} differ from the {ctx.dataset} train labels at {mismatched} positions; "
            f"the train split must be in torchvision's order"
        )
    if labels["noisy"].min() < 0 or labels["noisy"].max() >= ctx.num_classes:
        raise ConfigError(f"CIFAR-N labels in {path} fall outside [0, {ctx.num_classes})")
    return labels["noisy"]
