"""Run artifacts: the files a run leaves in its directory, the contract later tools read.

A run directory holds ``.hydra/config.yaml`` (written by Hydra), ``noisy_labels.npz``,
``metrics.csv`` (one row per epoch, flushed as it is written), ``summary.json`` (written
atomically at the end) and ``checkpoint.pt`` (written atomically every few epochs).
Every write here is either an append that is flushed at once or a replace through a temporary
file, so a run that is killed never leaves a half-written file behind.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf


SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
CHECKPOINT_FILE = "checkpoint.pt"
NOISY_LABELS_FILE = "noisy_labels.npz"
HYDRA_CONFIG_FILE = Path(".hydra") / "config.yaml"
# Where a run's files go when the run is trained again under a changed config: hidden, so that a
# leaderboard of the folder above does not read them.
REPLACED_FOLDER = ".replaced"

log = logging.getLogger("noisybench")

# A run in one of these states is finished: re-running it is skipped.
FINISHED_STATUSES = ("completed", "diverged")


# Trainer settings that do not change a run's numbers: a run may resume with other values.
RUNTIME_TRAINER_KEYS = ("device", "progress", "num_threads", "compile", "checkpoint_every", "pack")
# Trainer keys added after runs were recorded without them: at these (their default) values they
# are left out of the fingerprint, so that an earlier run of the same config still matches.
LATER_TRAINER_KEYS = {"optimizer": "sgd", "betas": [0.9, 0.999], "adam_eps": 1e-8}


# The config sections that make a run what it is (its trainer less the runtime settings).
IDENTITY_SECTIONS = ("dataset", "noise", "model", "loss", "seed", "trainer")


def fingerprint(cfg: DictConfig | dict) -> dict[str, Any]:
    """What must not change between a checkpoint and the run that resumes from it (also applied to
    a stored fingerprint, so that one written with a runtime setting still matches)."""
    if isinstance(cfg, DictConfig):  # these sections only: a sweep job's hydra node resolves only in its job
        cfg = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
               for k in IDENTITY_SECTIONS}
    return {**{k: cfg[k] for k in IDENTITY_SECTIONS if k != "trainer"},
            "trainer": {k: v for k, v in cfg["trainer"].items()
                        if k not in RUNTIME_TRAINER_KEYS and not (k in LATER_TRAINER_KEYS and v == LATER_TRAINER_KEYS[k])}}


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The dotted keys where two nested configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def _at(tree: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def config_changes(recorded: dict, cfg: DictConfig | dict) -> dict[str, tuple[Any, Any]]:
    """The dotted keys of the fingerprint in which ``cfg`` differs from the ``recorded`` one (a
    run's, a checkpoint's), each with its (recorded, new) value; empty when a run of ``cfg`` may
    reuse what was recorded."""
    old, new = fingerprint(recorded), fingerprint(cfg)
    return {key: (_at(old, key), _at(new, key)) for key in diff_keys(old, new)}


def describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{key}: {old!r} → {new!r}" for key, (old, new) in changes.items())


def launch_file(name: str) -> bool:
    """What Hydra and the cell lock write into a run directory before the run starts (its config,
    its log, the lock), as opposed to the run's artifacts."""
    return name in (".hydra", ".lock") or name.endswith(".log")


def utc_stamp() -> str:
    """A file name's time part: sorts by time, and two moves in one second stay apart."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def read_hydra_config(run_dir: Path) -> dict[str, Any]:
    """The run's .hydra/config.yaml as plain data (interpolations such as ``${seed}`` unresolved);
    ValueError naming the file when it cannot be read."""
    import yaml

    path = Path(run_dir) / HYDRA_CONFIG_FILE
    try:
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"corrupt {path}: {type(e).__name__}: {e}") from e
    if not isinstance(config, dict):
        raise ValueError(f"corrupt {path}: not a mapping")
    return config


def recorded_config_file(summary: dict | None, run_dir: Path) -> Path:
    """Where ``recorded_config`` reads a run's config: summary.json when it has one, else .hydra/config.yaml."""
    return Path(run_dir) / (SUMMARY_FILE if summary is not None and summary.get("config") is not None
                            else HYDRA_CONFIG_FILE)


def recorded_config(summary: dict | None, run_dir: Path) -> dict[str, Any] | None:
    """The fingerprint of the config a run recorded: its summary's ``config``, else (a summary
    written before that field, or none) its .hydra/config.yaml, still the run's own when a sweep
    reads it before it relaunches the cell; None when it has neither. Raises ValueError, KeyError or
    an OmegaConf error when the file cannot be read or an interpolation does not resolve here."""
    path = recorded_config_file(summary, run_dir)
    if path.name == SUMMARY_FILE:
        return fingerprint(summary["config"])
    if not path.is_file():
        return None
    tree = read_hydra_config(run_dir)
    # Only interpolations (``${...}``) need OmegaConf, which costs more than reading the file.
    return fingerprint(OmegaConf.create(tree) if "${" in str(tree) else tree)


def finished_run(run_dir: Path, cfg: DictConfig) -> tuple[dict | None, dict[str, tuple[Any, Any]]]:
    """The summary of the finished run in ``run_dir`` (None when it has none, or the run did not
    finish) and the changes of ``cfg`` since that run (``config_changes`` of its
    ``recorded_config``): a run is reused only when there are none. A run whose config cannot be
    read counts as unchanged."""
    run_dir = Path(run_dir)
    try:
        summary = read_summary(run_dir)
    except ValueError as e:
        log.warning("%s; training the cell again", e)
        return None, {}
    if summary is None or summary["status"] not in FINISHED_STATUSES:
        return None, {}
    try:
        recorded = recorded_config(summary, run_dir)
    except Exception as e:  # unreadable YAML, an interpolation that does not resolve here, a missing group
        log.warning("%s: config unreadable (%s: %s); taking the run as unchanged",
                    recorded_config_file(summary, run_dir), type(e).__name__, e)
        recorded = None
    return summary, {} if recorded is None else config_changes(recorded, cfg)


def checkpoint_changes(run_dir: Path, cfg: DictConfig) -> dict[str, tuple[Any, Any]]:
    """``config_changes`` of ``cfg`` since the run that wrote the checkpoint in ``run_dir``; empty
    when there is none or it cannot be read (resuming moves an unreadable one aside)."""
    import torch

    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        return {}
    try:  # mmap: only the fingerprint is read, not the model's weights
        recorded = torch.load(path, map_location="cpu", weights_only=False, mmap=True)["fingerprint"]
    except Exception:  # truncated, overwritten, not a checkpoint: each raises its own error type
        return {}
    return config_changes(recorded, cfg)


def replace_run(run_dir: Path, changes: dict[str, tuple[Any, Any]], keep=lambda name: False) -> Path:
    """Move the files of ``run_dir`` (all but those ``keep`` names) into
    ``<parent>/.replaced/<name>.<UTC time>/`` and log why: the run is trained again under a config
    that differs from its own by ``changes``. Returns the folder they went to."""
    run_dir = Path(run_dir)
    moved = run_dir.parent / REPLACED_FOLDER / f"{run_dir.name}.{utc_stamp()}"
    moved.mkdir(parents=True)
    for entry in run_dir.iterdir():
        if not keep(entry.name):
            entry.rename(moved / entry.name)
    log.warning("%s changed since it ran (%s); re-training it, the old run is in %s", run_dir,
                describe_changes(changes), moved)
    return moved


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` so that a reader, or another process writing the same file, never sees it
    half-written: a temporary file of its own beside it, then one rename."""
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch  # here, not at the top: the leaderboard reads artifacts without loading torch

    _atomic_write(path, lambda f: torch.save(obj, f))


def _jsonable(obj: Any) -> Any:
    """Plain JSON types; non-finite floats become null so the file stays valid JSON."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def read_summary(run_dir: Path) -> dict | None:
    """The run's summary, or None when there is none. Raises ValueError when it is corrupt."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"corrupt {path}: {e}") from e
    if not isinstance(summary, dict) or "status" not in summary:
        raise ValueError(f"corrupt {path}: not a summary object with a 'status' field")
    return summary


class MetricsCSV:
    """metrics.csv, one row per epoch, appended and flushed to disk after every row."""

    def __init__(self, path: Path, columns: Iterable[str]):
        self.path = Path(path)
        self.columns = list(columns)

    def keep_epochs_up_to(self, last_epoch: int) -> None:
        """Drop rows after ``last_epoch`` (rows written after the checkpoint a run resumes from)."""
        if not self.path.exists():
            return
        with self.path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= last_epoch]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        _atomic_write(self.path, lambda f: f.write(buf.getvalue().encode()))

    def append(self, row: dict) -> None:
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, lineterminator="\n")
            if new:
                writer.writeheader()
            writer.writerow({k: _format_cell(row[k]) for k in self.columns})
            f.flush()
            os.fsync(f.fileno())


def _format_cell(value: Any) -> Any:
    # repr-exact floats: a resumed run's rows must compare equal to an uninterrupted run's.
    return repr(float(value)) if isinstance(value, float) else value
