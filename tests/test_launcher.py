"""noisybench's submitit launchers without a cluster: what a job does on SLURM's warning signal,
and how sinfo's answers are read."""
from __future__ import annotations

import time

import pytest
from omegaconf import OmegaConf

from noisybench.__main__ import expose_hydra_plugins
from noisybench.registry import ConfigError

expose_hydra_plugins()
from hydra_plugins.noisybench_launcher import (SlurmLauncher, _checkpoint_stamps, gres_gpus,  # noqa: E402
                                               parse_time_limit)

from noisybench.pack import write_pack_manifest  # noqa: E402


def job(tmp_path, timeout_min: int, signal_delay_s: int, running_s: float) -> SlurmLauncher:
    """The launcher as a job sees it ``running_s`` seconds into its cell."""
    launcher = SlurmLauncher(timeout_min=timeout_min, signal_delay_s=signal_delay_s)
    launcher.config = OmegaConf.create({"trainer": {"checkpoint_every": 1}})
    launcher._cell = tmp_path
    launcher._started = time.monotonic() - running_s
    launcher._checkpoint_at_start = _checkpoint_stamps(tmp_path)
    return launcher


def test_time_limit_warning_requeues_a_cell_that_wrote_a_checkpoint(tmp_path):
    launcher = job(tmp_path, timeout_min=10, signal_delay_s=120, running_s=470)
    (tmp_path / "checkpoint.pt").write_bytes(b"epoch 3")
    delayed = launcher.checkpoint(["loss=ce"], "hydra.sweep.dir", 0, "id", {})
    assert delayed.function is launcher and delayed.args[0] == ["loss=ce"]
    assert launcher._requeued


def test_time_limit_warning_before_any_checkpoint_fails_naming_timeout_min(tmp_path):
    launcher = job(tmp_path, timeout_min=10, signal_delay_s=120, running_s=470)
    with pytest.raises(ConfigError, match=r"timeout_min=10 is too short .*signal_delay_s=120"):
        launcher.checkpoint(["loss=ce"], "hydra.sweep.dir", 0, "id", {})
    assert not launcher._requeued


def test_a_pack_job_is_requeued_when_any_of_its_cells_wrote_a_checkpoint(tmp_path):
    cells = [tmp_path / "a", tmp_path / "b"]
    for cell in cells:
        cell.mkdir()
    write_pack_manifest(tmp_path / "pack", cells)
    stalled = job(tmp_path / "pack", timeout_min=10, signal_delay_s=120, running_s=470)
    with pytest.raises(ConfigError, match=r"timeout_min=10 is too short"):
        stalled.checkpoint(["loss=ce"], "hydra.sweep.dir", 0, "id", {})
    (cells[1] / "checkpoint.pt").write_bytes(b"epoch 3")
    assert stalled.checkpoint(["loss=ce"], "hydra.sweep.dir", 0, "id", {}) is not None
    assert stalled._requeued


def test_preemption_requeues_even_before_the_first_checkpoint(tmp_path):
    # A signal long before the time limit's warning is a preemption: the cell made no progress
    # because it was stopped, not because its time limit is too short.
    launcher = job(tmp_path, timeout_min=60, signal_delay_s=120, running_s=30)
    assert launcher.checkpoint(["loss=ce"], "hydra.sweep.dir", 0, "id", {}) is not None
    assert launcher._requeued


@pytest.mark.parametrize("text, minutes", [
    ("infinite", None), ("30", 30), ("30:30", 30.5), ("4:00:00", 240), ("1-00:00:00", 1440), ("2-12", 3600),
])
def test_slurm_time_limits_read_in_minutes(text, minutes):
    assert parse_time_limit(text) == minutes


@pytest.mark.parametrize("gres, gpus", [
    ("(null)", 0), ("gpu:4", 4), ("gpu:a100:8(S:0-1)", 8), ("gpu:a100:2,gpu:v100:2", 4), ("shard:8,gpu:1", 1),
])
def test_gpus_read_from_a_nodes_gres(gres, gpus):
    assert gres_gpus(gres) == gpus
