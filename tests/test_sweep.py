"""Sweeps: the grid sweeper, stable cell directories, resume after a kill, launchers, leaderboard."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import run_cli

# A digits cell trains in well under a second per epoch; the callback is the real one.
TINY = ["experiment=quickstart", "trainer.epochs=2", "seed=0"]


def cells(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")}


def test_grid_is_a_union_of_sub_grids_with_cells_named_by_overrides(tmp_path):
    grid = "[{noise:symmetric,noise.rate:'0.0,0.4'},{noise:pairflip,noise.rate:'0.2'}]"
    proc = run_cli(["--multirun", *TINY, "loss=ce", f"hydra.sweeper.grid={grid}",
                    "trainer.epochs=1", f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = cells(tmp_path / "sweep")
    assert sorted(found) == [
        "loss=ce,noise.rate=0.0,noise=symmetric,seed=0,trainer.epochs=1",
        "loss=ce,noise.rate=0.2,noise=pairflip,seed=0,trainer.epochs=1",
        "loss=ce,noise.rate=0.4,noise=symmetric,seed=0,trainer.epochs=1",
    ]
    rates = {(s["noise"]["type"], s["noise"]["rate"]) for s in found.values()}
    assert rates == {("symmetric", 0.0), ("symmetric", 0.4), ("pairflip", 0.2)}


def test_bad_value_in_one_cell_fails_the_sweep_before_any_cell_trains(tmp_path):
    proc = run_cli(["--multirun", *TINY, "loss=ce", "noise.rate=0.2,1.5",
                    f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "noise.rate=1.5" in proc.stderr
    assert not (tmp_path / "sweep").exists()  # no cell folder, not even an empty one


def test_unknown_experiment_is_one_clear_line(tmp_path):
    proc = run_cli(["--multirun", "experiment=apl_mnits"], cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "apl_mnits" in lines[0] and "apl_mnist" in lines[0]


@pytest.mark.slow
def test_submitit_sweep_ends_with_a_leaderboard_equal_to_the_runs(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["--multirun", *TINY, "loss=ce,sce", "noise.rate=0.4", "seed=0,1",
                    "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = cells(sweep)
    assert len(found) == 4 and {s["status"] for s in found.values()} == {"completed"}
    board = pd.read_csv(sweep / "leaderboard.csv")
    assert len(board) == 2
    for loss in ("ce", "sce"):
        accs = pd.Series([100 * s["test_acc_last"] for s in found.values() if s["loss"] == loss])
        row = board[board["loss"] == loss].iloc[0]
        assert row["n_seeds"] == 2
        assert row["last_mean"] == pytest.approx(accs.mean(), abs=1e-9)
        assert row["last_std"] == pytest.approx(accs.std(ddof=1), abs=1e-9)
    assert (sweep / "leaderboard.md").read_text().count("|") > 4


@pytest.mark.slow
def test_killed_sweep_rerun_skips_the_finished_cell(tmp_path):
    sweep = tmp_path / "sweep"
    args = [sys.executable, "-m", "noisybench", "--multirun", *TINY, "loss=ce,gce", "noise.rate=0.4",
            "trainer.epochs=40", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    first = sweep / "loss=ce,noise.rate=0.4,seed=0,trainer.epochs=40" / "summary.json"
    second_metrics = sweep / "loss=gce,noise.rate=0.4,seed=0,trainer.epochs=40" / "metrics.csv"
    deadline = time.monotonic() + 240
    while not second_metrics.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert first.exists() and second_metrics.exists()
    finished = first.read_text()

    rerun = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert first.read_text() == finished  # not re-trained
    log = rerun.stdout + rerun.stderr
    assert "skipping" in log and "loss=ce," in log
    found = cells(sweep)
    assert {s["status"] for s in found.values()} == {"completed"}
    assert found["loss=gce,noise.rate=0.4,seed=0,trainer.epochs=40"]["epochs_completed"] == 40


def test_each_sweep_is_a_wandb_group_and_each_cell_is_tagged(tmp_path):
    pytest.importorskip("wandb")
    sweep = tmp_path / "my_table"
    proc = run_cli(["--multirun", *TINY, "trainer.epochs=1", "loss=gce", "noise.rate=0.4", "logger=wandb",
                    f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env={"WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (log_file,) = sweep.glob("*/wandb/offline-run-*/run-*.wandb")
    blob = log_file.read_bytes()
    for needle in (b"my_table", b"loss:gce", b"rate:0.4", b"dataset:digits", b"noise:symmetric"):
        assert needle in blob, needle
