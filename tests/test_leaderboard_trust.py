"""Results a user can trust: folders without a run, settings kept apart, unreadable metrics, plots, bands."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from helpers import compose_config
from noisybench.leaderboard import NoRunsError, make_leaderboard
from test_leaderboard import cell, write_run


def write_config(run_dir, overrides: list[str] = ()) -> None:
    """The .hydra/config.yaml Hydra writes into a job's folder before the job runs."""
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(compose_config(list(overrides))))


def test_a_folder_whose_config_was_rejected_is_not_a_run(tmp_path):
    write_run(tmp_path / "noise.rate=0.4", 0.7)
    rejected = tmp_path / "noise.rate=1.5"
    write_config(rejected, ["noise.rate=1.5"])
    (rejected / "__main__.log").write_text("ConfigError: noise.rate=1.5 is not in [0, 1)\n")
    board = make_leaderboard(tmp_path)
    assert board.counts()["runs"] == 1 and board.problems == []
    assert list(board.cells["rate"]) == [0.4]
    assert "1.5" not in board.markdown()
    with pytest.raises(NoRunsError, match="no runs under"):
        make_leaderboard(rejected)
