"""Results a user can trust: a run records what it is and what its numbers depend on, a changed
config is never answered with stale results, and failures, rejections and Ctrl-C end cleanly."""
from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import compose_config, run_cli
from omegaconf import OmegaConf

from noisybench.__main__ import remove_if_unused
from noisybench.artifacts import fingerprint, finished_run
from noisybench.run import run
from noisybench.trainer import bf16_is_fast, interrupts_deferred

# One epoch on a 300-image subset of digits: a run takes about a second.
QUICK = ["trainer.epochs=1", "dataset.train_size=300"]


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def epochs_in(run_dir: Path, name: str = "metrics.csv") -> list[int]:
    with open(run_dir / name, newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.fixture
def keep_threads():
    """trainer.num_threads sets torch's thread count for the whole process: restored after the test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("settings, bf16, channels_last", [
    (["trainer.num_threads=1", "trainer.amp=false", "trainer.channels_last=false"], False, False),
    (["trainer.num_threads=2"], bf16_is_fast(torch.device("cpu")), True),  # auto, resolved as training did
])
def test_summary_records_the_runs_config_and_the_settings_its_last_digits_depend_on(
        tmp_path, keep_threads, settings, bf16, channels_last):
    cfg = compose_config([*QUICK, "trainer.device=cpu", *settings])
    run(cfg, tmp_path)
    summary = summary_of(tmp_path)
    assert summary["config"] == json.loads(json.dumps(fingerprint(cfg)))
    assert summary["numerics"] == {"device": "cpu", "threads": cfg.trainer.num_threads, "bf16_autocast": bf16,
                                   "channels_last": channels_last, "compile": False, "pack": 1}


def test_a_finished_run_is_reused_only_under_the_config_it_ran_with(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="noisybench")
    run_dir = tmp_path / "run"
    run(compose_config([*QUICK, "trainer.lr=0.01"]), run_dir)
    old = (run_dir / "summary.json").read_text()

    run(compose_config([*QUICK, "trainer.lr=0.02"]), run_dir)
    assert summary_of(run_dir)["trainer"]["lr"] == 0.02 and epochs_in(run_dir) == [1]
    (moved,) = (tmp_path / ".replaced").iterdir()
    assert moved.name.startswith("run.") and (moved / "summary.json").read_text() == old
    assert f"{run_dir} changed since it ran (trainer.lr: 0.01 → 0.02); re-training it, the old run is in {moved}" \
        in caplog.text

    retrained = (run_dir / "summary.json").read_text()
    run(compose_config([*QUICK, "trainer.lr=0.02"]), run_dir)
    assert (run_dir / "summary.json").read_text() == retrained
    assert len(list((tmp_path / ".replaced").iterdir())) == 1


def test_a_summary_without_its_config_is_compared_by_the_runs_hydra_config(tmp_path):
    cfg = compose_config(QUICK)
    (tmp_path / "summary.json").write_text(json.dumps({"status": "completed"}))  # written before "config"
    assert finished_run(tmp_path, cfg) == ({"status": "completed"}, {})  # nothing to compare: unchanged
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    assert finished_run(tmp_path, cfg)[1] == {}
    changed = compose_config([*QUICK, "loss=gce"])
    assert finished_run(tmp_path, changed)[1]["loss.name"] == ("ce", "gce")


def write_lr_preset(config_dir: Path, lr: float) -> None:
    """A user's own config group, outside the package: editing it changes no cell's name."""
    (config_dir / "mine").mkdir(parents=True, exist_ok=True)
    (config_dir / "mine" / "lr.yaml").write_text(f"# @package _global_\ntrainer:\n  lr: {lr}\n")


def test_a_sweep_rerun_after_a_config_edit_retrains_the_changed_cells(tmp_path):
    config_dir, sweep = tmp_path / "conf", tmp_path / "sweep"
    args = ["--multirun", f"--config-dir={config_dir}", "+mine=lr", "loss=ce,gce", *QUICK, f"hydra.sweep.dir={sweep}"]
    write_lr_preset(config_dir, 0.05)
    first = run_cli(args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    ce, gce = (sweep / f"+mine=lr,dataset.train_size=300,loss={loss},trainer.epochs=1" for loss in ("ce", "gce"))
    old_ce = (ce / "summary.json").read_text()
    (gce / "summary.json").unlink()  # gce killed after its last checkpoint: unfinished

    write_lr_preset(config_dir, 0.1)
    second = run_cli(args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "2 of them to train" in log
    assert f"{ce} changed since it ran (trainer.lr: 0.05 → 0.1); re-training it" in log
    assert "1 finished and 1 unfinished cells changed since they ran (trainer.lr); re-training them, the old " \
           f"runs are in {sweep / '.replaced'}" in log
    for cell in (ce, gce):
        assert summary_of(cell)["config"]["trainer"]["lr"] == 0.1 and epochs_in(cell) == [1]
        (moved,) = (sweep / ".replaced").glob(cell.name + ".*")
        assert (moved / "checkpoint.pt").exists() and (moved / ".hydra" / "config.yaml").exists()
    (moved_ce,) = (sweep / ".replaced").glob(ce.name + ".*")
    assert (moved_ce / "summary.json").read_text() == old_ce

    third = run_cli(args, cwd=tmp_path)
    assert third.returncode == 0 and "0 of them to train" in third.stdout + third.stderr
    assert len(list((sweep / ".replaced").iterdir())) == 2


@pytest.mark.parametrize("damage", [
    lambda data: data[:len(data) // 2],  # truncated: a full disk, a copy cut short
    lambda data: os.urandom(len(data)),  # overwritten
])
def test_a_corrupt_checkpoint_is_moved_aside_and_the_cell_starts_over(tmp_path, caplog, damage):
    cfg = compose_config([*QUICK, "trainer.epochs=2"])
    run(cfg, tmp_path)
    (tmp_path / "summary.json").unlink()  # killed after its last checkpoint
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(damage(checkpoint.read_bytes()))
    broken = checkpoint.read_bytes()

    caplog.set_level(logging.WARNING, logger="noisybench")
    summary = run(cfg, tmp_path)
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    assert epochs_in(tmp_path) == [1, 2]  # the old attempt's rows are not mixed in
    (aside,) = tmp_path.glob("checkpoint.pt.corrupt-*")
    assert aside.read_bytes() == broken
    stamp = aside.name.split("corrupt-")[1]
    assert epochs_in(tmp_path, f"metrics.csv.corrupt-{stamp}") == [1, 2]
    (line,) = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert str(checkpoint) in line and "moved aside" in line and "starts over from epoch 0" in line


def test_a_sweep_with_a_failed_cell_writes_its_leaderboard_and_exits_non_zero(tmp_path):
    sweep = tmp_path / "sweep"
    # A metrics.csv that cannot be written fails the cell once it starts training.
    (sweep / "dataset.train_size=300,loss=gce,trainer.epochs=1" / "metrics.csv").mkdir(parents=True)
    proc = run_cli(["--multirun", "loss=ce,gce", *QUICK, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "error: 1 of the sweep's 2 jobs failed" in proc.stderr.splitlines()[-1]
    assert summary_of(sweep / "dataset.train_size=300,loss=ce,trainer.epochs=1")["status"] == "completed"
    assert (sweep / "leaderboard.csv").exists()


def test_a_rejected_config_leaves_no_empty_run_folder_and_never_removes_a_run(tmp_path):
    for entry in (".hydra", ".lock", "__main__.log"):
        (tmp_path / "rejected" / entry).mkdir(parents=True) if entry == ".hydra" else \
            (tmp_path / "rejected" / entry).touch()
    remove_if_unused(tmp_path / "rejected")
    assert not (tmp_path / "rejected").exists()
    (tmp_path / "ran" / ".hydra").mkdir(parents=True)
    (tmp_path / "ran" / "metrics.csv").touch()
    remove_if_unused(tmp_path / "ran")
    assert (tmp_path / "ran" / "metrics.csv").exists()


def wait_for_an_epoch(metrics: str, cwd: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(cwd.glob(metrics))
        if found and len(found[0].read_text().splitlines()) >= 2:
            return
        time.sleep(0.05)
    raise AssertionError("no epoch was written before the run ended or the wait ran out")


@pytest.mark.parametrize("args, metrics, hint", [
    ([], "outputs/*/*/metrics.csv",
     "re-run the same command with hydra.run.dir={dir} to resume (finished epochs are kept there)"),
    (["--multirun", "loss=ce", "hydra.sweep.dir=sweep"], "sweep/*/metrics.csv",
     "re-run the same command to resume (finished epochs are kept in {dir})"),
])
def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, args, metrics, hint):
    proc = subprocess.Popen([sys.executable, "-m", "noisybench", *args, "trainer.epochs=100"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            # A shell's background job inherits SIGINT ignored, and Python keeps
                            # it so: the run must see Ctrl-C however the suite was started.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_an_epoch(metrics, tmp_path, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-3000:]
    (run_dir,) = (p.parent for p in tmp_path.glob(metrics))
    folder = run_dir if not args else tmp_path / "sweep"
    assert stderr.splitlines()[-1] == "interrupted; " + hint.format(dir=folder)
    assert "Traceback" not in stderr
    assert summary_of(run_dir)["status"] == "failed"
    assert (run_dir / "checkpoint.pt").exists() and epochs_in(run_dir)[0] == 1


def test_a_ctrl_c_while_an_epoch_is_written_waits_until_its_checkpoint_is_written_too():
    written = []
    # As in a terminal, whatever the suite inherited (a background job ignores SIGINT).
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the signal is delivered here, and held
                written.append("metrics row and checkpoint")
        assert written == ["metrics row and checkpoint"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)
