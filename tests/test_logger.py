"""logger=wandb sends the per-epoch metrics; offline by default, so no network is needed."""
from __future__ import annotations

import pytest
from helpers import compose_config

from noisybench.run import run


def test_wandb_offline_writes_the_run_with_its_metrics(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = compose_config(["logger=wandb", "logger.group=g1", "trainer.epochs=2", "noise.rate=0.2"])
    assert cfg.logger.mode == "offline"
    summary = run(cfg, tmp_path)
    assert summary["status"] == "completed"
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "wandb").iterdir())
    (log_file,) = runs[0].glob("run-*.wandb")
    blob = log_file.read_bytes()
    # The binary log holds the metric names, the group and the tags naming the cell.
    for needle in (b"test_acc", b"train_acc_clean", b"memorised", b"g1", b"loss:ce", b"rate:0.2", b"dataset:digits"):
        assert needle in blob, needle
