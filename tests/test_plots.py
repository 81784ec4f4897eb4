"""Plots: a real tiny run's per-class and memorisation curves, and a sweep's plots, as valid PNGs."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli
from noisybench.leaderboard import make_leaderboard
from noisybench.plots import (MEMORISATION_PLOT, PER_CLASS_PLOT, RATE_PLOT, mean_curves, plot_per_class, plot_run,
                              plot_sweep)
from test_leaderboard import write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert len(data) > 0 and data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A real 2-epoch digits run with 40 % symmetric noise."""
    root = tmp_path_factory.mktemp("plots")
    run_dir = root / "run"
    proc = run_cli(["trainer.epochs=2", "noise.rate=0.4", f"hydra.run.dir={run_dir}"], cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_plot_run_writes_per_class_and_memorisation_pngs_next_to_metrics(tiny_run):
    for name in (PER_CLASS_PLOT, MEMORISATION_PLOT):
        (tiny_run / name).unlink(missing_ok=True)
    paths = plot_run(tiny_run)
    assert paths == [tiny_run / PER_CLASS_PLOT, tiny_run / MEMORISATION_PLOT]
    for path in paths:
        width, height = png_size(path)
        assert width > 300 and height > 200


def test_plot_run_without_a_finished_epoch_writes_nothing(tmp_path):
    assert plot_run(tmp_path) == []
    (tmp_path / "metrics.csv").write_text("epoch,test_acc\n")
    assert plot_run(tmp_path) == []
    assert not list(tmp_path.glob("*.png"))


def test_per_class_plot_of_a_hundred_classes(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    metrics = pd.DataFrame({"epoch": [1, 2, 3], "test_acc": [0.1, 0.2, 0.3],
                            **{f"test_acc_class_{k}": rng.random(3) for k in range(100)}})
    png_size(plot_per_class(metrics, tmp_path / "c100.png", "cifar100"))


def test_plot_sweep_writes_rate_and_epoch_plots_next_to_the_leaderboard(tmp_path):
    rows = "epoch,test_acc\n" + "".join(f"{e},{0.1 * e}\n" for e in (1, 2, 3))
    for loss in ("ce", "gce"):
        for rate in (0.0, 0.2, 0.4):
            for seed in (0, 1):
                run = write_run(tmp_path / f"{loss}_{rate}_{seed}", 0.5 + seed / 10, loss=loss, rate=rate,
                                seed=seed, epochs=3)
                (run / "metrics.csv").write_text(rows)
    write_run(tmp_path / "clean", 0.9, noise="none", variant=None, rate=0.0, epochs=3)
    board = make_leaderboard(tmp_path)
    paths = plot_sweep(board)
    # ce and gce ranked over the three noisy settings (the clean one has ce alone): a diagram per metric
    assert paths == [tmp_path / RATE_PLOT, tmp_path / "acc_vs_epoch_mnist_cnn4_3ep.png", tmp_path / "cd_last.png",
                     tmp_path / "cd_best.png"]
    for path in paths:
        png_size(path)


def test_epoch_curves_average_the_seeds_of_each_cell(tmp_path):
    for seed, accs in enumerate(((0.1, 0.2, 0.6), (0.3, 0.4, 0.8))):
        run = write_run(tmp_path / f"ce_{seed}", accs[-1], seed=seed, epochs=3)
        (run / "metrics.csv").write_text("epoch,test_acc\n" + "".join(f"{e},{a}\n" for e, a in enumerate(accs, 1)))
    run = write_run(tmp_path / "gce", 0.5, loss="gce", epochs=1)
    (run / "metrics.csv").write_text("epoch,test_acc\n1,0.5\n")
    (write_run(tmp_path / "broken", 0.5, loss="sce", epochs=3) / "metrics.csv").write_text("epoch,loss\n1,2\n")
    board = make_leaderboard(tmp_path)
    curves, unplotted = mean_curves(board.runs)
    curves = {key[6]: curve for key, curve in curves.items()}
    assert sorted(curves) == ["ce", "gce"]
    assert [(p.path, p.detail) for p in unplotted] == [("broken/metrics.csv", "no column test_acc")]
    assert curves["ce"].tolist() == pytest.approx([20.0, 30.0, 70.0])
    assert curves["ce"].index.tolist() == [1, 2, 3] and curves["gce"].tolist() == pytest.approx([50.0])
