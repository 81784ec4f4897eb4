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
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf


SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
CHECKPOINT_FILE = "checkpoint.pt"
NOISY_LABELS_FILE = "noisy_labels.npz"

# A run in one of these states is finished: re-running it is skipped.
FINISHED_STATUSES = ("completed", "diverged")


# Trainer settings that do not change a run's numbers: a run may resume with other values.
RUNTIME_TRAINER_KEYS = ("device", "progress", "num_threads", "compile", "checkpoint_every", "pack")


def fingerprint(cfg: DictConfig | dict) -> dict[str, Any]:
    """What must not change between a checkpoint and the run that resumes from it (also applied to
    a stored fingerprint, so that one written with a runtime setting still matches)."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    return {
        "dataset": c["dataset"], "noise": c["noise"], "model": c["model"], "loss": c["loss"],
        "seed": c["seed"], "trainer": {k: v for k, v in c["trainer"].items() if k not in RUNTIME_TRAINER_KEYS},
    }


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The dotted keys where two nested configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


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


def atomic_write_json(path: Path, obj: Any) -> None:
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n"
    _atomic_write(path, lambda f: f.write(text.encode()))


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
