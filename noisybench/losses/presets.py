"""Paper presets: the hyperparameters each paper's code uses, per loss, dataset, noise type, rate.

A preset is a YAML table in ``presets/<name>.yaml`` (shipped with the package):

    description: one line            # whose settings, from which file of their code
    base: eps_softmax                # optional: losses or settings not found here come from there
    noise: [symmetric, asymmetric]   # noise types the rows cover unless a row names its own
    constants: {eps: 1.0e-8}         # the code base's constants, for every loss that has them
    rows:
      - {loss: nce_rce, dataset: mnist, alpha: 1.0, beta: 10.0}
      - {loss: [nce_mae, nce_rce], dataset: [cifar10, cifar100], alpha: 1.0, beta: 1.0}
      - {loss: nfl, dataset: cifar10, noise: asymmetric, scale: 1.0, gamma: 0.5}
      - {loss: ce_eps_mae, dataset: cifar100, noise: symmetric, rate: 0.6, alpha: 0.00125}

``loss``, ``dataset`` and ``rate`` take one value or a list; ``noise`` a noise name, a list, or
``"*"`` (any); a row without ``rate`` covers every rate. Noise ``none`` is looked up as
symmetric noise at rate 0 (the papers' clean runs). The most specific matching row wins (one
naming the rate beats one that does not; one naming its noise beats the table's default); rows
of the preset itself beat those of its base. ``constants`` (merged along the base chain, the
preset's own first) fill the parameters a row leaves out, for the loss that runs.

Besides hyperparameters a row may set ``weight_decay`` (the loss-level L2 that replaces the
trainer's, e.g. ANL's 0 next to its L1 term; null: the trainer's) and ``run_as: <loss>``, which
builds that loss instead (``apl_as_run`` uses it to reproduce APL's NGCE+RCE configs that name
NGCEandMAE).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from noisybench.registry import ConfigError

from .base import LOSSES

ANY = "*"


def _as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


@dataclass(frozen=True)
class Row:
    losses: tuple[str, ...]
    datasets: tuple[str, ...]
    noise: tuple[str, ...] | None  # None: any noise
    rates: tuple[float, ...] | None  # None: any rate
    named_noise: bool  # the row names its noise (beats the table's default)
    values: dict[str, Any]

    def covers_noise(self, noise: str | None) -> bool:
        return self.noise is None or noise in self.noise

    def covers_rate(self, rate: float | None) -> bool:
        return self.rates is None or (
            rate is not None and any(math.isclose(rate, r, abs_tol=1e-9) for r in self.rates))


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    base: str | None
    constants: dict[str, Any]
    rows: tuple[Row, ...]


def _noise_list(value: Any) -> tuple[str, ...] | None:
    return None if value is None or value == ANY else _as_tuple(value)


def _parse(name: str, text: str) -> Preset:
    table = yaml.safe_load(text)
    default_noise = table.get("noise", ANY)
    rows = []
    for raw in table["rows"]:
        raw = dict(raw)
        named = "noise" in raw
        rates = raw.pop("rate", None)
        rows.append(Row(losses=_as_tuple(raw.pop("loss")), datasets=_as_tuple(raw.pop("dataset")),
                        noise=_noise_list(raw.pop("noise", default_noise)),
                        rates=None if rates is None else tuple(float(r) for r in _as_tuple(rates)),
                        named_noise=named, values=raw))
    return Preset(name, table.get("description", ""), table.get("base"), dict(table.get("constants") or {}),
                  tuple(rows))


@lru_cache(maxsize=None)
def presets() -> dict[str, Preset]:
    """Every preset table shipped in ``noisybench/losses/presets/``, by name."""
    folder = resources.files("noisybench.losses").joinpath("presets")
    found = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".yaml"):
            name = entry.name[: -len(".yaml")]
            found[name] = _parse(name, entry.read_text(encoding="utf-8"))
    return dict(sorted(found.items()))


def preset_names() -> list[str]:
    return list(presets())


def preset_chain(name: str) -> list[Preset]:
    """The preset and its bases, the preset first."""
    table = presets()
    if name not in table:
        raise ConfigError(f"unknown loss.preset '{name}'; available: {', '.join(table)}")
    chain = [table[name]]
    while chain[-1].base is not None:
        chain.append(table[chain[-1].base])
    return chain


def _listing(values) -> str:
    return ", ".join(sorted({str(v) for v in values}))


def preset_values(preset: str, loss: str, dataset: str | None, noise: str | None = None,
                  rate: float | None = None) -> dict[str, Any]:
    """The preset's values for this loss and setting (with ``run_as`` and ``weight_decay`` when
    the row sets them, and the code base's constants for the loss that runs); ConfigError when
    it has none."""
    chain = preset_chain(preset)
    where = f"loss.preset={preset} has no values for {loss}"
    rows = [(depth, r) for depth, p in enumerate(chain) for r in p.rows if loss in r.losses]
    if not rows:
        covered = {n for p in chain for r in p.rows for n in r.losses}
        raise ConfigError(f"{where}; it covers the losses: {_listing(covered)}")
    if dataset is None:
        raise ConfigError(f"loss.preset={preset} needs the dataset name to choose {loss}'s values")
    rows_here = [(d, r) for d, r in rows if dataset in r.datasets]
    if not rows_here:
        raise ConfigError(f"{where} on {dataset}; it has: {_listing(n for _, r in rows for n in r.datasets)}")
    if noise == "none":
        noise, rate = "symmetric", 0.0
    by_noise = [(d, r) for d, r in rows_here if r.covers_noise(noise)]
    if not by_noise and noise is None:
        raise ConfigError(f"loss.preset={preset} needs the noise type to choose {loss}'s values on {dataset}")
    if not by_noise:
        types = {n for _, r in rows_here for n in r.noise}
        raise ConfigError(f"{where} on {dataset} with {noise} noise; it has: {_listing(types)}")
    by_rate = [(d, r) for d, r in by_noise if r.covers_rate(rate)]
    if not by_rate and rate is None:
        raise ConfigError(f"loss.preset={preset} needs the noise rate to choose {loss}'s values on "
                          f"{dataset} with {noise} noise")
    if not by_rate:
        raise ConfigError(f"{where} on {dataset} with {noise} noise at rate {rate}; it has the rates: "
                          f"{_listing(x for _, r in by_noise for x in r.rates or ())}")
    best = min(by_rate, key=lambda dr: (dr[0], dr[1].rates is None, not dr[1].named_noise))
    values = best[1].values
    params = LOSSES.meta(values.get("run_as", loss))["params"]
    constants = {k: v for p in reversed(chain) for k, v in p.constants.items() if k in params}
    return {**constants, **values}
