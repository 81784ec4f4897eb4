"""End to end through the CLI: the default run learns, leaves its artifacts, resumes and skips."""
from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import compose_config, run_cli

from noisybench.noise import NoisyLabels
from noisybench.run import run
from noisybench.trainer import metric_columns

SUMMARY_KEYS = {"status", "dataset", "noise", "loss", "model", "seed", "noise_seed", "epochs_completed",
                "test_acc_last", "test_acc_best", "best_epoch", "per_class_test_acc_last", "wall_time_s"}


def read_metrics(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_default_run_learns_digits_and_writes_every_artifact(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli([f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["status"] == "completed" and summary["dataset"] == "digits"
    assert summary["noise"] == {"type": "symmetric", "variant": "exact", "rate": 0.0, "realised_rate": 0.0}
    assert summary["test_acc_last"] > 0.85
    assert len(summary["per_class_test_acc_last"]) == 10
    rows = read_metrics(run_dir)
    assert list(rows[0]) == metric_columns(10)
    assert [int(r["epoch"]) for r in rows] == list(range(1, summary["epochs"] + 1))
    assert float(rows[-1]["test_acc"]) == pytest.approx(summary["test_acc_last"])
    labels = NoisyLabels.load(run_dir / "noisy_labels.npz")
    assert labels.flipped.sum() == 0 and np.array_equal(labels.noisy, labels.clean)
    assert (run_dir / ".hydra" / "config.yaml").exists()

    again = run_cli([f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert again.returncode == 0 and "skipping" in again.stderr + again.stdout


def test_users_example_trains_sce_under_symmetric_noise(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(["loss=sce", "noise.rate=0.4", "trainer.epochs=2", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["loss"], summary["noise"]["type"], summary["noise"]["rate"]) == ("sce", "symmetric", 0.4)
    # Exact per-class counts: int(int(0.4 * 1347) / 10) = 53 flips in each of the 10 classes.
    assert summary["noise"]["realised_rate"] == pytest.approx(530 / 1347)
    labels = NoisyLabels.load(run_dir / "noisy_labels.npz")
    assert np.all(labels.noisy[labels.flipped] != labels.clean[labels.flipped])


@pytest.mark.parametrize("args,named", [
    (["loss=nope"], "nope"),
    (["noise.rate=1.2"], "noise.rate"),
    (["dataset=mnist", "data.root=/nonexistent/place"], "/nonexistent/place"),
])
def test_bad_input_exits_non_zero_with_one_clear_line(tmp_path, args, named):
    proc = run_cli([*args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and named in errors[0], proc.stderr
    assert not (tmp_path / "run").exists()  # Hydra made it for the run; a rejected run leaves none


def test_diverging_run_is_recorded_and_exits_zero(tmp_path):
    cfg = compose_config(["trainer.lr=1e30", "trainer.grad_clip=null", "trainer.epochs=3"])
    summary = run(cfg, tmp_path)
    assert summary["status"] == "diverged" and summary["diverged_epoch"] == 1
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"

    proc = run_cli(["trainer.lr=1e30", "trainer.grad_clip=null", "trainer.epochs=3",
                    f"hydra.run.dir={tmp_path / 'cli'}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["status"] == "diverged"


def test_a_run_warns_when_its_batches_cannot_train_dmi(tmp_path, caplog):
    cfg = compose_config(["loss=dmi", "loss.warmup_epochs=0", "trainer.epochs=1", "trainer.batch_size=8"])
    caplog.set_level(logging.WARNING, logger="noisybench")
    assert run(cfg, tmp_path)["status"] == "completed"
    assert "loss=dmi: a batch of 8 cannot hold all 10 classes" in caplog.text


RESUME_ARGS = ["noise.rate=0.4", "trainer.epochs=6", "trainer.batch_size=16"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    reference = tmp_path / "reference"
    run(compose_config(RESUME_ARGS), reference)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "noisybench", *RESUME_ARGS, f"hydra.run.dir={killed}"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if (killed / "metrics.csv").exists() and len(read_metrics(killed)) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    # Its summary, written before training, still says running, with its resolved loss values.
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["status"] == "running" and summary["loss_params"]["preset"] is None
    assert 2 <= len(read_metrics(killed)) < 6

    resumed = run_cli([*RESUME_ARGS, f"hydra.run.dir={killed}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr + resumed.stdout
    strip = lambda rows: [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]  # noqa: E731
    assert strip(read_metrics(killed)) == strip(read_metrics(reference))


def test_resuming_with_a_changed_config_is_refused(tmp_path):
    run(compose_config(["trainer.epochs=1"]), tmp_path)
    (tmp_path / "summary.json").unlink()
    from noisybench.registry import ConfigError
    with pytest.raises(ConfigError, match="loss"):
        run(compose_config(["trainer.epochs=1", "loss=gce"]), tmp_path)
