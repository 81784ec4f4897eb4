"""Finding run directories and reading each one into a row: its cell, seeds, status and accuracies.

A folder is a run when it holds one of the files training writes (``RUN_MARKERS``): a folder
with only ``.hydra/`` (a config rejected before training, a job that never started) is not.
The cell of a run (what a leaderboard averages over seeds) is read from ``summary.json``; a run
that has none yet (killed, or still going) is placed from its ``.hydra/config.yaml``, with the
loss hyperparameters resolved by ``build_loss`` exactly as the run resolves them.
``metrics.csv`` is not parsed here; only the epochs of a run without a summary are counted.

Beyond ``CELL_KEYS``, a cell is told apart by every config key that can change a run's numbers
(``fingerprint``: trainer minus its runtime settings, dataset, model) and whose value differs
between the runs read together: such a key, e.g. ``trainer.lr``, becomes a column of its own.
The config is summary.json's ``config`` field, else (runs written before it) the run's
.hydra/config.yaml; a run where neither can be read has the value ``?`` in every such column.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from noisybench.artifacts import (CHECKPOINT_FILE, HYDRA_CONFIG_FILE, METRICS_FILE, NOISY_LABELS_FILE, SUMMARY_FILE,
                                  read_hydra_config, read_summary, recorded_config,
                                  recorded_config_file)
from noisybench.noise import NOISE
from noisybench.noise.human import CIFAR_N_FILES, resolve_key
from noisybench.registry import ConfigError

log = logging.getLogger(__name__)

# Files only a run that started training writes.
RUN_MARKERS = (SUMMARY_FILE, METRICS_FILE, NOISY_LABELS_FILE, CHECKPOINT_FILE)

# What a leaderboard cell is: runs that agree on all of these differ only in their seeds.
CELL_KEYS = ("dataset", "model", "noise", "variant", "rate", "epochs", "loss", "loss_params")
# Config keys (and sections) that CELL_KEYS already carry, or that differ between the seeds of one
# cell (seed, noise.seed): never columns of their own.
CELL_CONFIG_KEYS = ("seed", "noise", "loss", "dataset.name", "model.name", "trainer.epochs")
UNKNOWN = "?"  # a config key's value in a run whose config cannot be read, or that lacks the key

COMPLETED = "completed"
FAILED_STATUSES = ("diverged", "failed")
# "incomplete": no summary.json yet (a killed run, or one still training).
INCOMPLETE_STATUSES = ("running", "incomplete")
KNOWN_STATUSES = (COMPLETED, *FAILED_STATUSES, *INCOMPLETE_STATUSES)
# Which of several runs of one cell and seed pair is kept: the most finished one.
STATUS_RANK = {status: rank for rank, status in enumerate(KNOWN_STATUSES)}


class NoRunsError(ValueError):
    """The directory holds no run directories."""


@dataclass(frozen=True)
class Problem:
    """A run that is not averaged: incomplete, failed, diverged, unreadable or a duplicate."""

    path: str  # relative to the leaderboard's root
    status: str  # a run status, "unreadable" or "duplicate"
    detail: str
    cell: str = ""  # the run's setting and seed, when it could be read


def find_run_dirs(root: Path) -> list[Path]:
    """Every run directory under ``root`` (``root`` itself included), sorted; runs are not searched."""
    found = []
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except (PermissionError, FileNotFoundError, NotADirectoryError):
            continue
        if any(e.name in RUN_MARKERS for e in entries):
            found.append(folder)
            continue
        # Hidden folders (.hydra, .submitit, .git) never hold runs of their own.
        stack.extend(Path(e.path) for e in entries if e.is_dir() and not e.name.startswith("."))
    return sorted(found)


def format_value(value: Any) -> str:
    """One hyperparameter value as text; 1 and 1.0 read the same, other floats round-trip exactly."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        number = float(value)
        if number.is_integer() and abs(number) < 1e15:
            return str(int(number))
        return repr(number)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def value_order(text: str) -> tuple:
    """A formatted value's place: numbers in numeric order (0.5 < 2 < 10), then text."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def params_label(params: Mapping[str, Any]) -> str:
    """All resolved loss hyperparameters (preset included), sorted: the cell's loss identity."""
    return ", ".join(f"{k}={format_value(params[k])}" for k in sorted(params))


def fixed_rate(noise: str) -> bool:
    """The noise type's rate is fixed by something else (human annotations) or is no noise at all."""
    return noise in NOISE and NOISE.meta(noise).get("rates") == "0"


def noise_variant(noise: str, dataset: str, fields: Mapping[str, Any]) -> str:
    """The noise type's own settings as one label: its variant, CIFAR-N label set or ``norm_std=...``.

    ``fields`` holds the recorded values; a field missing from it takes the type's default.
    """
    if noise not in NOISE:
        return str(fields.get("variant") or "")
    parts = []
    for name, default in NOISE.meta(noise).get("fields", {}).items():
        value = fields.get(name, default)
        if noise == "human" and dataset in CIFAR_N_FILES:
            try:  # key null and key "aggre" are one label set on CIFAR-10
                value = resolve_key(dataset, value)
            except ConfigError:
                pass
        parts.append(format_value(value) if name in ("variant", "key") else f"{name}={format_value(value)}")
    return ", ".join(parts)


def _noise_fields(noise: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """The per-type noise fields: from summary.json, else (older summaries) from the run's config."""
    wanted = NOISE.meta(noise["type"]).get("fields", {}) if noise["type"] in NOISE else {}
    fields = {k: noise[k] for k in wanted if k in noise and noise[k] is not None}
    if len(fields) < len(wanted) and (run_dir / HYDRA_CONFIG_FILE).is_file():
        cfg_noise = read_hydra_config(run_dir).get("noise") or {}
        fields.update({k: cfg_noise[k] for k in wanted if k not in fields and k in cfg_noise})
    return fields


def _require(summary: Mapping[str, Any], path: Path, *keys: str) -> None:
    for key in keys:
        if key not in summary:
            raise ValueError(f"corrupt {path}: no '{key}' field")


def _accuracy(summary: Mapping[str, Any], key: str, path: Path) -> float:
    value = summary.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise ValueError(f"corrupt {path}: status completed but {key}={value!r} is not an accuracy in [0, 1]")
    return float(value)


def run_from_summary(summary: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """The run's row from its summary.json; ValueError naming the file when a field is unusable."""
    path = run_dir / SUMMARY_FILE
    _require(summary, path, "dataset", "model", "noise", "loss", "loss_params", "seed", "epochs")
    noise = summary["noise"]
    if not isinstance(noise, Mapping) or "type" not in noise or "rate" not in noise:
        raise ValueError(f"corrupt {path}: 'noise' must be an object with 'type' and 'rate'")
    if not isinstance(summary["loss_params"], Mapping):
        raise ValueError(f"corrupt {path}: 'loss_params' must be an object")
    status = summary["status"]
    if status not in KNOWN_STATUSES:
        raise ValueError(f"corrupt {path}: unknown status {status!r}; expected one of {', '.join(KNOWN_STATUSES)}")
    try:
        row = _cell(summary["dataset"], summary["model"], noise["type"], _noise_fields(noise, run_dir),
                    noise["rate"], summary["epochs"], summary["loss"], summary["loss_params"])
        seed = int(summary["seed"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"corrupt {path}: noise.rate, epochs and seed must be numbers ({e})") from e
    row.update(status=status, seed=seed, noise_seed=summary.get("noise_seed"),
               realised_rate=noise.get("realised_rate"), test_acc_last=math.nan, test_acc_best=math.nan,
               detail=_detail(summary, run_dir))
    if status == COMPLETED:
        row.update(test_acc_last=_accuracy(summary, "test_acc_last", path),
                   test_acc_best=_accuracy(summary, "test_acc_best", path))
    return row


def _detail(summary: Mapping[str, Any], run_dir: Path) -> str:
    if summary["status"] == "diverged":
        return f"training loss not finite in epoch {summary.get('diverged_epoch', '?')}"
    if summary["status"] == "failed":
        return str(summary.get("error", "no error recorded"))
    if summary["status"] == "running":  # training, or killed while it trained: its metrics.csv says how far
        return f"{_count_epochs(run_dir / METRICS_FILE)} of {summary['epochs']} epochs done"
    return ""


def run_from_config(run_dir: Path) -> dict[str, Any]:
    """The row of a run that started but has no summary.json (killed, or still going), from its
    .hydra/config.yaml."""
    path = run_dir / HYDRA_CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{run_dir}: no {SUMMARY_FILE} and no {HYDRA_CONFIG_FILE}, so its cell is unknown")
    config = read_hydra_config(run_dir)
    try:
        from omegaconf import OmegaConf

        from noisybench.data import DATASETS
        from noisybench.losses import resolve_loss

        cfg = OmegaConf.create(config)
        dataset, noise = cfg.dataset.name, cfg.noise.name
        rate = float(cfg.noise.rate)
        loss, _ = resolve_loss(cfg.loss, DATASETS.meta(dataset)["num_classes"], dataset=dataset, noise=noise,
                               rate=rate, probe=False)
        row = _cell(dataset, cfg.model.name, noise, cfg.noise, rate, cfg.trainer.epochs, loss.name,
                    loss.params)
        row.update(seed=cfg.seed, noise_seed=cfg.noise.seed)
    except Exception as e:  # a missing key, a bad value: the run cannot have started
        raise ValueError(f"unusable {path}: {type(e).__name__}: {e}") from e
    done = _count_epochs(run_dir / METRICS_FILE)
    row.update(status="incomplete", realised_rate=math.nan, test_acc_last=math.nan, test_acc_best=math.nan,
               detail=f"no {SUMMARY_FILE}; {done} of {row['epochs']} epochs in {METRICS_FILE}")
    return row


def _count_epochs(metrics: Path) -> int:
    """Rows of metrics.csv, counted without parsing them (only for runs without a summary)."""
    try:
        with metrics.open("rb") as f:
            return max(sum(1 for line in f if line.strip()) - 1, 0)
    except FileNotFoundError:
        return 0


def _cell(dataset: str, model: str, noise: str, noise_fields: Mapping[str, Any], rate: Any, epochs: Any,
          loss: str, loss_params: Mapping[str, Any]) -> dict[str, Any]:
    params = dict(loss_params)
    return {"dataset": str(dataset), "model": str(model), "noise": str(noise),
            "variant": noise_variant(str(noise), str(dataset), noise_fields),
            "rate": round(float(rate), 6), "epochs": int(epochs), "loss": str(loss),
            "loss_params": params_label(params), "params": params}


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if any(name == k or name.startswith(f"{k}.") for k in CELL_CONFIG_KEYS):
            continue
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = format_value(value)
    return flat


def config_values(summary: Mapping[str, Any] | None, run_dir: Path) -> dict[str, str] | None:
    """The run's config beyond its cell columns, as dotted keys and formatted values (``{"trainer.lr":
    "0.5"}``), from its ``recorded_config``; None when it has none or it cannot be read."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        tree = recorded_config(summary, run_dir)
    # An interpolation that does not resolve here (an unset ${oc.env:...}), a missing section.
    except (ValueError, KeyError, TypeError, AttributeError, OmegaConfBaseException) as e:
        log.warning("%s: config unreadable (%s: %s); its settings beyond the cell columns read %r",
                    recorded_config_file(summary, run_dir), type(e).__name__, e, UNKNOWN)
        return None
    return None if tree is None else _flatten(tree)


def read_run(run_dir: Path) -> dict[str, Any]:
    """One run's row, its ``config_values`` under ``config``; ValueError (its message names the file
    and the fault) when unreadable."""
    summary = read_summary(run_dir)
    row = run_from_config(run_dir) if summary is None else run_from_summary(summary, run_dir)
    row["config"] = config_values(summary, run_dir)
    return row


def swept_keys(columns: Iterable[str]) -> list[str]:
    """The config keys that tell cells apart beyond CELL_KEYS: the dotted names among ``columns``
    (a frame's columns, or a row's keys)."""
    return [c for c in columns if "." in c]


def cell_keys(frame: pd.DataFrame) -> list[str]:
    """What identifies a cell of the frame: CELL_KEYS and its swept config keys."""
    return [*CELL_KEYS, *swept_keys(frame)]


def _swept(configs: list[dict[str, str] | None]) -> dict[str, list[str]]:
    """Each config key whose value differs between the runs that know their config, with every
    run's value (UNKNOWN where a run does not know it)."""
    known = [c for c in configs if c is not None]
    keys = sorted({k for c in known for k in c})
    return {k: [UNKNOWN if c is None else c.get(k, UNKNOWN) for c in configs]
            for k in keys if len({c.get(k, UNKNOWN) for c in known}) > 1}


RUN_COLUMNS = (*CELL_KEYS, "params", "status", "seed", "noise_seed", "realised_rate", "test_acc_last",
               "test_acc_best", "detail", "path", "run_dir")


def collect_runs(root: Path) -> tuple[pd.DataFrame, list[Problem]]:
    """All runs under ``root``, one row each (duplicates of a cell and seed pair dropped), and the
    runs that are not averaged. Raises NoRunsError when ``root`` holds no run at all."""
    root = Path(root)
    if not root.is_dir():
        raise NoRunsError(f"{root} is not a directory")
    run_dirs = find_run_dirs(root)
    if not run_dirs:
        raise NoRunsError(f"no runs under {root} (a run is a folder with {', '.join(RUN_MARKERS)})")
    rows, problems = [], []
    for run_dir in run_dirs:
        rel = run_dir.relative_to(root).as_posix() or "."
        try:
            row = read_run(run_dir)
        except ValueError as e:
            problems.append(Problem(rel, "unreadable", str(e)))
            continue
        row.update(path=rel, run_dir=str(run_dir))
        rows.append(row)
    swept = _swept([row.pop("config") for row in rows])
    runs = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    for at, (key, values) in enumerate(swept.items(), start=len(CELL_KEYS)):
        runs.insert(at, key, values)
    runs, duplicates = _drop_duplicates(runs)
    problems += duplicates
    problems += [Problem(r["path"], r["status"], r["detail"], describe(r))
                 for r in runs[runs["status"] != COMPLETED].to_dict("records")]
    problems.sort(key=lambda p: p.path)
    return runs.reset_index(drop=True), problems


def describe(run: Mapping[str, Any]) -> str:
    """A run's setting and seed in one line, e.g. ``cifar10 cnn8 symmetric 0.4 nce_rce trainer.lr=0.1 seed 1``."""
    noise = run["noise"] if fixed_rate(run["noise"]) else f"{run['noise']} {run['rate']:g}"
    variant = f" ({run['variant']})" if run["variant"] else ""
    swept = "".join(f" {k}={run[k]}" for k in swept_keys(run))
    return f"{run['dataset']} {run['model']} {noise}{variant} {run['loss']}{swept} seed {run['seed']}"


def _drop_duplicates(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[Problem]]:
    """Keep one run per cell and (seed, noise seed): the same run twice must not count twice."""
    if runs.empty:
        return runs, []
    key = [*cell_keys(runs), "seed", "noise_seed"]
    ordered = runs.assign(_rank=runs["status"].map(STATUS_RANK)).sort_values(["_rank", "path"], kind="stable")
    dup = ordered.duplicated(key, keep="first")
    if not dup.any():
        return runs, []
    kept_path = ordered.groupby(key, sort=False, dropna=False)["path"].transform("first")
    problems = [Problem(r["path"], "duplicate", f"same cell and seeds as {kept}; not counted", describe(r))
                for r, kept in zip(ordered.loc[dup].to_dict("records"), kept_path[dup])]
    return ordered.loc[~dup].drop(columns="_rank").sort_values("path"), problems
