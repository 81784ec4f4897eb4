"""Cluster sweeps on a real SLURM scheduler: submit, preempt and requeue, cancel, submit twice,
refuse bad requests. Start a one-node cluster with ``scripts/slurm_local.sh start`` (as root);
where no cluster answers, every test here is skipped and says why.

Every wait is bounded: each sweep runs under a timeout, and the jobs a test submitted are
cancelled when it ends, whatever happened.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import REPO_ROOT, run_cli

pytestmark = pytest.mark.slurm

SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
SWEEP_TIMEOUT_S = 240


def cluster_problem() -> str | None:
    """Why no SLURM cluster can run the tests here, or None when one answers."""
    for cmd in (["scontrol", "ping"], ["sinfo", "-h", "-o", "%T"]):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        except FileNotFoundError:
            return f"no SLURM client: {cmd[0]} is not on PATH"
        except subprocess.TimeoutExpired:
            return f"'{' '.join(cmd)}' got no answer in 20 s"
        out = (proc.stdout + proc.stderr).strip()
        if proc.returncode != 0 or "DOWN" in out:
            return f"'{' '.join(cmd)}' says: {out}"
    if not re.search(r"^(idle|mixed|allocated)", proc.stdout, re.M):
        return f"no node is up (sinfo: {proc.stdout.strip() or 'no nodes'})"
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = cluster_problem()
    if problem:
        pytest.skip(f"no SLURM cluster answers ({problem}); start one with scripts/slurm_local.sh start (as root)")


@pytest.fixture
def sweep(tmp_path):
    """A sweep directory whose SLURM jobs are all cancelled when the test ends."""
    folder = tmp_path / "sweep"
    yield folder
    ids = {p.name.split("_")[0] for p in (folder / ".submitit").glob("*") if p.is_dir()}
    if ids:
        subprocess.run(["scancel", *sorted(ids)], capture_output=True, timeout=30)


def cells(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")}


def metrics(cell: Path) -> pd.DataFrame:
    """metrics.csv as written (repr-exact floats, compared as text) without the wall times."""
    return pd.read_csv(cell / "metrics.csv", dtype=str).drop(columns="epoch_time_s")


def job_logs(sweep_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted((sweep_dir / ".submitit").glob("*/*_log.*")))


def start_sweep(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "noisybench", *args], cwd=cwd,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def finish(proc: subprocess.Popen, timeout: float = SWEEP_TIMEOUT_S) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        pytest.fail(f"the sweep did not end within {timeout} s")


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen within {timeout} s")


def rows(cell: Path) -> int:
    try:
        return max(len((cell / "metrics.csv").read_text().splitlines()) - 1, 0)
    except FileNotFoundError:
        return 0


# The sweep the launchers are compared on: two digits cells, long enough to be interrupted.
EPOCHS = 30
GRID = ["--multirun", "experiment=quickstart", f"trainer.epochs={EPOCHS}", "loss=ce,gce", "noise.rate=0.4", "seed=0"]
CELLS = [f"loss={loss},noise.rate=0.4,seed=0,trainer.epochs={EPOCHS}" for loss in ("ce", "gce")]


@pytest.mark.slow
def test_every_cell_runs_as_a_slurm_job_and_a_preempted_one_resumes_to_the_local_numbers(cluster, sweep, tmp_path):
    proc = start_sweep([*GRID, *SLURM, f"hydra.sweep.dir={sweep}"], tmp_path, tmp_path / "slurm.log")
    try:
        wait_until(lambda: rows(sweep / CELLS[0]) >= 3, 120, "three epochs of the first cell")
        (task,) = [p.name for p in (sweep / ".submitit").glob("*_0") if p.is_dir()]
        done_before = rows(sweep / CELLS[0])
        # What SLURM sends before a time limit, or to a job it preempts (submitit's USR2).
        subprocess.run(["scancel", "--signal=USR2", task], check=True, timeout=30)
    finally:
        rc = finish(proc)
    assert rc == 0, (tmp_path / "slurm.log").read_text()[-3000:]
    found = cells(sweep)
    assert sorted(found) == CELLS and {s["epochs_completed"] for s in found.values()} == {EPOCHS}
    assert {s["status"] for s in found.values()} == {"completed"}
    # One SLURM array task per cell, each ending with submitit's result file.
    tasks = [p for p in (sweep / ".submitit").glob("*_*") if p.is_dir()]
    assert len(tasks) == 2 and all(list(t.glob("*_result.pkl")) for t in tasks)
    logs = job_logs(sweep)
    assert len(set(re.findall(r"Starting with JobEnvironment\(job_id=(\d+_\d+)", logs))) == 2
    assert f"Requeued job {task}" in logs
    resumed = int(re.search(r"resuming from .* at epoch (\d+)", logs).group(1))
    assert done_before <= resumed < EPOCHS  # interrupted, and at most the epoch in progress lost

    reference = tmp_path / "reference"
    proc = run_cli([*GRID, f"hydra.sweep.dir={reference}"], cwd=tmp_path, timeout=SWEEP_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # On a CPU, the SLURM sweep (one cell interrupted and resumed) and the default launcher's
    # uninterrupted one give the same numbers, to the last digit.
    assert pd.read_csv(sweep / "leaderboard.csv").equals(pd.read_csv(reference / "leaderboard.csv"))
    for name in CELLS:
        assert metrics(sweep / name).equals(metrics(reference / name)), name


@pytest.mark.slow
def test_cancelled_cell_fails_in_bounded_time_and_a_rerun_runs_only_it(cluster, sweep, tmp_path):
    # Long enough to outlive SLURM's KillWait: a cancelled job gets SIGTERM (which submitit
    # ignores) and SIGKILL only then.
    epochs = 80
    args = [*GRID, f"trainer.epochs={epochs}", *SLURM, f"hydra.sweep.dir={sweep}"]
    other, victim = (f"loss={loss},noise.rate=0.4,seed=0,trainer.epochs={epochs}" for loss in ("ce", "gce"))
    proc = start_sweep(args, tmp_path, tmp_path / "first.log")
    try:
        wait_until(lambda: rows(sweep / victim) >= 1, 120, "the first epoch of the cell to cancel")
        (task,) = [p.name for p in (sweep / ".submitit").glob("*_1") if p.is_dir()]
        subprocess.run(["scancel", task], check=True, timeout=30)
        cancelled = time.monotonic()
    finally:
        rc = finish(proc)
    # Reported within the launcher's bound (SLURM's KillWait, a queue poll and a grace period).
    assert time.monotonic() - cancelled < 90
    log = (tmp_path / "first.log").read_text()
    # The sweep goes on past the cancelled cell, writes its leaderboard, then exits 1 so that
    # scripts notice.
    assert rc == 1, log[-3000:]
    assert re.search(r"error: 1 of the sweep's 2 jobs failed", log), log[-3000:]
    assert re.search(rf"SLURM job {task} ended without a result \(state: CANCELLED", log)
    assert cells(sweep)[other]["status"] == "completed"
    board = pd.read_csv(sweep / "leaderboard.csv").set_index("loss")
    assert board.loc["gce", "n_incomplete"] == 1 and board.loc["gce", "n_seeds"] == 0
    assert board.loc["ce", "n_seeds"] == 1
    finished = (sweep / other / "summary.json").read_text()

    rerun = run_cli(args, cwd=tmp_path, timeout=SWEEP_TIMEOUT_S)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = rerun.stdout + rerun.stderr
    assert re.search(r"checked the configs of 2 cells .*; 1 of them to train, as 1 jobs", log)
    assert f"skipping {other}" in log
    assert (sweep / other / "summary.json").read_text() == finished
    assert cells(sweep)[victim]["status"] == "completed" and cells(sweep)[victim]["epochs_completed"] == epochs
    assert metrics(sweep / victim)["epoch"].tolist() == [str(e) for e in range(1, epochs + 1)]


@pytest.mark.slow
def test_same_sweep_submitted_twice_trains_each_cell_once(cluster, sweep, tmp_path):
    epochs = 10
    args = ["--multirun", "experiment=quickstart", f"trainer.epochs={epochs}", "loss=ce,gce", "noise.rate=0.4",
            "seed=0", *SLURM, f"hydra.sweep.dir={sweep}"]
    procs = [start_sweep(args, tmp_path, tmp_path / f"sweep{i}.log") for i in range(2)]
    for i, proc in enumerate(procs):
        assert finish(proc) == 0, (tmp_path / f"sweep{i}.log").read_text()[-3000:]
    found = cells(sweep)
    assert len(found) == 2 and {s["status"] for s in found.values()} == {"completed"}
    for name in found:
        # One training process per cell: one first epoch in its log, no row twice.
        assert (sweep / name / "__main__.log").read_text().count(f"epoch 1/{epochs} ") == 1
        assert metrics(sweep / name)["epoch"].tolist() == [str(e) for e in range(1, epochs + 1)]
    assert len(pd.read_csv(sweep / "leaderboard.csv")) == 2


def test_asking_for_gpus_the_cluster_lacks_fails_before_submission(cluster, sweep, tmp_path):
    gres = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, timeout=20).stdout
    if "gpu" in gres:
        pytest.skip(f"this cluster has GPUs (gres: {gres.strip()})")
    proc = run_cli(["--multirun", "experiment=quickstart", "trainer.epochs=1", "loss=ce", "noise.rate=0.4", "seed=0",
                    "hydra/launcher=slurm_gpu", f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "hydra.launcher.gpus_per_node=1" in line and "no GPUs" in line
    assert not (sweep / ".submitit").exists()


@pytest.mark.parametrize("override, message", [
    ("hydra.launcher.partition=nope", r"partition='nope'.*choose one of: \w+"),
    ("hydra.launcher.timeout_min=1", r"timeout_min=1 is too short.*signal_delay_s=120"),
    ("hydra.launcher.cpus_per_task=100000", r"cpus_per_task=100000 asks for 100000 CPUs"),
    ("hydra.launcher.mem_gb=100000000", r"mem_gb=100000000 is more than"),
])
def test_requests_slurm_could_never_run_are_refused_with_the_value(cluster, override, message):
    from omegaconf import OmegaConf

    from noisybench.__main__ import expose_hydra_plugins
    from noisybench.registry import ConfigError

    expose_hydra_plugins()
    from hydra_plugins.noisybench_launcher import SlurmLauncher

    params = OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "conf/hydra/launcher/submitit_slurm.yaml"))
    for interpolated in ("_target_", "submitit_folder", "name"):
        del params[interpolated]
    key, value = override.removeprefix("hydra.launcher.").split("=")
    params[key] = value if key == "partition" else int(value)
    launcher = SlurmLauncher(**params)
    with pytest.raises(ConfigError, match=message):
        launcher.check_request()


@pytest.mark.slow
def test_a_packed_sweep_is_one_slurm_job_per_pack_with_the_local_numbers(cluster, sweep, tmp_path):
    # (A pack job's requeue is the same as a cell's: tests/test_launcher.py checks its decision,
    # tests/test_pack.py the resume of a pack's cells from their checkpoints.)
    packed = [*GRID, "trainer.epochs=3", "trainer.pack=2"]
    names = [name.replace(f"trainer.epochs={EPOCHS}", "trainer.epochs=3") for name in CELLS]
    proc = run_cli([*packed, *SLURM, f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=SWEEP_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 of them to train, as 1 jobs" in proc.stdout + proc.stderr
    # One job (submitted alone, not as an array) trained both cells.
    assert len([p for p in (sweep / ".submitit").iterdir() if p.is_dir() and p.name[0].isdigit()]) == 1
    found = cells(sweep)
    assert sorted(found) == names
    assert {(s["status"], s["epochs_completed"], s["pack_size"]) for s in found.values()} == {("completed", 3, 2)}

    reference = tmp_path / "reference"
    proc = run_cli([*packed, f"hydra.sweep.dir={reference}"], cwd=tmp_path, timeout=SWEEP_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in names:
        assert metrics(sweep / name).equals(metrics(reference / name)), name


@pytest.mark.slow
def test_a_users_own_loss_runs_as_a_slurm_job(cluster, sweep, tmp_path):
    # The module lives where the sweep is started, outside the package: each job imports it there.
    (tmp_path / "mylosses.py").write_text(
        "import torch.nn.functional as F\n\n"
        "def poly2(logits, labels, eps1=1.0):\n"
        "    pt = F.softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)\n"
        "    return F.cross_entropy(logits, labels, reduction='none') + eps1 * (1 - pt)\n")
    args = ["--multirun", "experiment=quickstart", "trainer.epochs=2", "loss=ce,custom", "loss.fn=mylosses:poly2",
            "noise.rate=0.4", "seed=0", *SLURM, f"hydra.sweep.dir={sweep}"]
    proc = start_sweep(args, tmp_path, tmp_path / "sweep.log")
    assert finish(proc) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    found = cells(sweep)
    assert sorted(s["loss"] for s in found.values()) == ["ce", "poly2"]
    assert {s["status"] for s in found.values()} == {"completed"}
    assert sorted(pd.read_csv(sweep / "leaderboard.csv")["loss"]) == ["ce", "poly2"]
