"""Helpers shared by the tests: composing the app's config and running the CLI and the scripts."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from torch.utils._python_dispatch import TorchDispatchMode

REPO_ROOT = Path(__file__).resolve().parents[1]


def compose_config(overrides: list[str] = ()) -> DictConfig:
    with initialize_config_module(config_module="noisybench.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run_cli(args: list[str], cwd: Path, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "noisybench", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def run_script(script_name: str, *args: str) -> subprocess.CompletedProcess:
    """A script of scripts/, run as a user runs it."""
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / script_name), *args],
                          capture_output=True, text=True)


def read_rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if k != "epoch_time_s"} for row in csv.DictReader(f)]


def assert_same_metrics(alone_dir, pack_dir, test_counts):
    """A packed cell's metrics equal its metrics run alone, within the tolerance tests/test_pack.py
    states and justifies."""
    expected, got = read_rows(alone_dir), read_rows(pack_dir)
    assert [r["epoch"] for r in got] == [r["epoch"] for r in expected]
    labels = np.load(alone_dir / "noisy_labels.npz")
    one_sample = {"train_acc_noisy": len(labels["noisy"]), "train_acc_clean": len(labels["noisy"]),
                  "memorised": labels["flipped"].sum(), "corrected": labels["flipped"].sum(),
                  "test_acc": test_counts.sum(), **{f"test_acc_class_{k}": n for k, n in enumerate(test_counts)}}
    for a, b in zip(expected, got):
        assert b["lr"] == a["lr"]
        for key in ("train_loss", "test_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), (pack_dir, a["epoch"], key)
        for key, n in one_sample.items():
            assert abs(b[key] - a[key]) <= 1 / max(int(n), 1) + 1e-12, (pack_dir, a["epoch"], key)


class HostReads(TorchDispatchMode):
    """Records every op that reads a tensor back into Python (``.item()``, ``bool(t)``): on a
    GPU each one waits for the device."""

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default):
            self.reads.append(func)
        return func(*args, **(kwargs or {}))
