"""The per-cell lock: one process at a time trains a cell, whatever launches it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from noisybench.lock import DirLock

HOLD = """
import sys, time
from noisybench.lock import DirLock
lock = DirLock(sys.argv[1])
assert lock.acquire()
print("held", flush=True)
time.sleep(120)
"""


def hold_in_another_process(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_lock_is_refused_after_the_wait_and_names_its_holder(tmp_path):
    holder = hold_in_another_process(tmp_path)
    try:
        tic = time.monotonic()
        lock = DirLock(tmp_path, wait_s=0.5)
        assert not lock.acquire()
        assert 0.5 <= time.monotonic() - tic < 5
        assert f"pid {holder.pid}" in lock.holder
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_lock_is_free_again_when_its_holder_is_killed(tmp_path):
    holder = hold_in_another_process(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    with DirLock(tmp_path, wait_s=5) as lock:
        assert lock.held


def test_a_lock_is_reentrant_within_a_process_and_released_by_the_outermost(tmp_path):
    with DirLock(tmp_path, wait_s=0) as outer:
        with DirLock(tmp_path, wait_s=0) as inner:
            assert outer.held and inner.held
        # still held by the outer one: another process is refused
        probe = subprocess.run([sys.executable, "-c", "import sys; from noisybench.lock import DirLock; "
                                "sys.exit(0 if DirLock(sys.argv[1], wait_s=0).acquire() else 3)", str(tmp_path)],
                               timeout=60)
        assert probe.returncode == 3
    assert DirLock(tmp_path, wait_s=0).acquire()


@pytest.mark.slow
def test_same_sweep_started_twice_trains_each_cell_once(tmp_path):
    epochs = 10
    sweep = tmp_path / "sweep"
    args = [sys.executable, "-m", "noisybench", "--multirun", "experiment=quickstart", f"trainer.epochs={epochs}",
            "loss=ce,gce", "noise.rate=0.4", "seed=0", f"hydra.sweep.dir={sweep}"]
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    names = sorted(p.name for p in sweep.glob("loss=*"))
    assert len(names) == 2
    for name in names:
        log = (sweep / name / "__main__.log").read_text()
        assert log.count(f"epoch 1/{epochs} ") == 1, name
        frame = pd.read_csv(sweep / name / "metrics.csv")
        assert frame["epoch"].tolist() == list(range(1, epochs + 1))
