"""The noise table, the result type and the two entry points: check a noise config, make labels.

Each noise family registers a function ``fn(clean, rate, rng, ctx, **fields) -> noisy`` in
``NOISE``. Its registry metadata says what ``check_noise`` validates without touching data:

* ``rates``: the allowed ``noise.rate``, written as it appears in the error message:
  ``"[0, 1)"``, ``"[0, 1]"`` or ``"0"`` (the rate is fixed by something else, or no noise);
* ``fields``: the type's own config fields and their defaults (``variant``, ``norm_std``, ``key``);
* ``variants``: the allowed values of ``variant``, when the type has one;
* ``check``: an optional ``check(fields, dataset, num_classes)`` for dataset-dependent rules.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from noisybench.registry import ConfigError, Registry

NOISE = Registry("noise")

# Keys every noise config has; everything else is a per-type field listed in the registry meta.
COMMON_FIELDS = ("name", "rate", "seed")


@dataclass(frozen=True)
class NoiseContext:
    """What an injector may need besides the labels: the dataset and, for some types, its data."""

    dataset: str
    num_classes: int
    images: np.ndarray | None = None  # uint8 [N, C, H, W]; only the instance generator reads it
    root: Path | None = None  # data.root; the human-label files live under it
    download: bool = False


@dataclass
class NoisyLabels:
    """Noisy labels next to the clean ones, with the realised noise they amount to."""

    noisy: np.ndarray  # int64 [N]
    clean: np.ndarray  # int64 [N]
    flipped: np.ndarray  # bool [N], noisy != clean
    realised_rate: float  # mean of flipped
    transition: np.ndarray  # float64 [K, K]; row = true class, row-stochastic

    FILENAME: ClassVar[str] = "noisy_labels.npz"

    @classmethod
    def from_labels(cls, clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> NoisyLabels:
        clean = np.asarray(clean, dtype=np.int64)
        noisy = np.asarray(noisy, dtype=np.int64)
        flipped = noisy != clean
        return cls(
            noisy=noisy,
            clean=clean,
            flipped=flipped,
            realised_rate=float(flipped.mean()) if flipped.size else 0.0,
            transition=realised_transition(clean, noisy, num_classes),
        )

    def save(self, path: str | Path) -> Path:
        """Write ``noisy_labels.npz`` into the directory ``path`` (or to ``path`` if it ends in .npz)."""
        target = _npz_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            target, noisy=self.noisy, clean=self.clean, flipped=self.flipped, transition=self.transition
        )
        return target

    @classmethod
    def load(cls, path: str | Path) -> NoisyLabels:
        with np.load(_npz_path(path)) as npz:
            flipped = npz["flipped"].astype(bool)
            return cls(
                noisy=npz["noisy"].astype(np.int64),
                clean=npz["clean"].astype(np.int64),
                flipped=flipped,
                realised_rate=float(flipped.mean()) if flipped.size else 0.0,
                transition=npz["transition"].astype(np.float64),
            )


def _npz_path(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".npz" else path / NoisyLabels.FILENAME


def realised_transition(clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
    """Row-normalised confusion counts of (clean, noisy); a class with no samples keeps an identity row."""
    counts = np.bincount(clean * num_classes + noisy, minlength=num_classes * num_classes)
    counts = counts.reshape(num_classes, num_classes).astype(np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    empty = totals[:, 0] == 0
    counts[empty] = np.eye(num_classes)[empty]
    totals[empty] = 1.0
    return counts / totals


def noise_rng(seed: int) -> np.random.Generator:
    """The one generator a noise call draws from: the same seed gives the same stream in any process."""
    return np.random.Generator(np.random.PCG64(seed))


def _as_numpy(images: Any) -> np.ndarray | None:
    if images is None:
        return None
    if hasattr(images, "detach"):  # a torch tensor, possibly on an accelerator
        images = images.detach().cpu().numpy()
    return np.asarray(images)


def _as_dict(cfg_noise: Any) -> dict[str, Any]:
    if isinstance(cfg_noise, Mapping):
        plain = dict(cfg_noise)
    else:  # an OmegaConf DictConfig: resolve ${seed} against its root config
        from omegaconf import OmegaConf

        plain = OmegaConf.to_container(cfg_noise, resolve=True)
    if not isinstance(plain, dict):
        raise ConfigError(f"noise config must be a mapping with name/rate/seed; got {cfg_noise!r}")
    return plain


def _split_fields(cfg: dict[str, Any]) -> tuple[str, float, int, dict[str, Any]]:
    """Validate the fields every noise type shares and its own field names; return them split."""
    if "name" not in cfg:
        raise ConfigError(f"noise config has no 'name'; registered: {', '.join(NOISE.names())}")
    name = cfg["name"]
    meta = NOISE.meta(name)

    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"noise.seed={seed!r} is not allowed; use a non-negative integer")

    rate = cfg.get("rate", 0.0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise ConfigError(f"noise.rate={rate!r} is not a number; {name} noise allows {meta['rates']}")
    rate = float(rate)
    allowed = {"[0, 1)": 0.0 <= rate < 1.0, "[0, 1]": 0.0 <= rate <= 1.0, "0": rate == 0.0}[meta["rates"]]
    if not allowed:
        raise ConfigError(f"noise.rate={rate:g} is not allowed for {name} noise; allowed: {meta['rates']}")

    defaults = meta.get("fields", {})
    unknown = sorted(set(cfg) - set(COMMON_FIELDS) - set(defaults))
    if unknown:
        known = ", ".join([*COMMON_FIELDS, *defaults])
        raise ConfigError(f"noise.{unknown[0]} is not a field of {name} noise; its fields: {known}")
    fields = {key: cfg.get(key, default) for key, default in defaults.items()}

    variants = meta.get("variants")
    if variants and fields["variant"] not in variants:
        raise ConfigError(
            f"noise.variant={fields['variant']!r} is not a variant of {name} noise; allowed: {', '.join(variants)}"
        )
    return name, rate, int(seed), fields


def _validated(cfg_noise: Any, dataset: str, num_classes: int) -> tuple[str, float, int, dict[str, Any]]:
    name, rate, seed, fields = _split_fields(_as_dict(cfg_noise))
    check = NOISE.meta(name).get("check")
    if check is not None:
        check(fields, dataset, num_classes)
    return name, rate, seed, fields


def check_noise(cfg_noise: Any, dataset: str, num_classes: int) -> None:
    """Raise ConfigError (one line) if this noise config cannot apply to ``dataset``; reads no data."""
    _validated(cfg_noise, dataset, num_classes)


def make_noisy_labels(
    cfg_noise: Any,
    clean: np.ndarray,
    num_classes: int,
    dataset: str,
    images: Any = None,
    root: str | Path | None = None,
    download: bool = False,
) -> NoisyLabels:
    """Noisy training labels for ``clean`` as ``cfg_noise`` asks (name, rate, seed and its own fields)."""
    name, rate, seed, fields = _validated(cfg_noise, dataset, num_classes)

    clean = np.asarray(clean)
    if clean.ndim != 1 or (clean.size and (clean.min() < 0 or clean.max() >= num_classes)):
        raise ValueError(f"clean labels must be a 1-D array of class indices in [0, {num_classes})")
    clean = clean.astype(np.int64)
    ctx = NoiseContext(
        dataset=dataset,
        num_classes=num_classes,
        images=_as_numpy(images),
        root=None if root is None else Path(root),
        download=download,
    )
    noisy = NOISE.get(name)(clean, rate, noise_rng(seed), ctx, **fields)
    return NoisyLabels.from_labels(clean, noisy, num_classes)
