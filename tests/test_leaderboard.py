"""Leaderboard: cells and their statistics, failed and unreadable runs, paper numbers, outputs, callback."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from helpers import REPO_ROOT, compose_config
from noisybench.callbacks import LeaderboardCallback
from noisybench.leaderboard import load_paper_results, make_leaderboard
from noisybench.leaderboard.__main__ import main as leaderboard_main
from noisybench.losses import build_loss

REFERENCE = REPO_ROOT.parent / "shared" / "reference" / "robust-losses.md"


def write_run(run_dir: Path, last: float | None, best: float | None = None, *, seed: int = 0,
              status: str = "completed", loss: str = "ce", loss_params: dict | None = None,
              dataset: str = "mnist", model: str = "cnn4", noise: str = "symmetric",
              variant: str | None = "exact", rate: float = 0.4, epochs: int = 120, **extra) -> Path:
    """A run directory holding only a summary.json, as the trainer writes it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "status": status, "dataset": dataset, "num_classes": 10,
        "noise": {"type": noise, "variant": variant, "rate": rate, "realised_rate": rate},
        "loss": loss, "loss_params": {"preset": None, "weight_decay": None} if loss_params is None else loss_params,
        "model": model, "seed": seed, "noise_seed": seed, "epochs": epochs,
        "epochs_completed": epochs if status == "completed" else 3,
        "test_acc_last": last, "test_acc_best": last if best is None else best, "best_epoch": epochs,
        **extra,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def cell(board: pd.DataFrame, **where) -> pd.Series:
    rows = board
    for key, value in where.items():
        rows = rows[rows[key] == value]
    assert len(rows) == 1, f"{len(rows)} cells match {where}"
    return rows.iloc[0]


def test_cell_statistics_equal_the_hand_computed_mean_and_sample_std(tmp_path):
    for seed, (last, best) in enumerate([(0.50, 0.55), (0.60, 0.62), (0.64, 0.70)]):
        write_run(tmp_path / "sweep" / f"ce_{seed}", last, best, seed=seed)
    write_run(tmp_path / "sweep" / "sce_0", 0.8125, loss="sce", seed=0)
    assert leaderboard_main([str(tmp_path)]) == 0
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    ce = cell(board, loss="ce")
    assert (ce["n_seeds"], ce["n_failed"], ce["n_incomplete"]) == (3, 0, 0)
    # last: deviations from 58 are -8, 2, 6 -> variance (64 + 4 + 36) / 2 = 52
    assert ce["last_mean"] == pytest.approx(58.0, abs=1e-9)
    assert ce["last_std"] == pytest.approx(math.sqrt(52.0), abs=1e-9)
    # best: mean 62.333..., deviations -7.333, -0.333, 7.667 -> variance 56.333...
    assert ce["best_mean"] == pytest.approx(187 / 3, abs=1e-9)
    assert ce["best_std"] == pytest.approx(math.sqrt(169 / 3), abs=1e-9)
    assert ce["seeds"] == "0 1 2"
    sce = cell(board, loss="sce")
    assert sce["n_seeds"] == 1 and sce["last_mean"] == pytest.approx(81.25) and math.isnan(sce["last_std"])


def test_diverged_and_failed_runs_are_counted_not_averaged_and_a_corrupt_run_is_reported(tmp_path, capsys):
    write_run(tmp_path / "a", 0.70, seed=0)
    write_run(tmp_path / "b", 0.80, seed=1)
    write_run(tmp_path / "c", 0.10, seed=2, status="diverged", diverged_epoch=4)
    write_run(tmp_path / "d", None, seed=3, status="failed", error="RuntimeError: boom")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "summary.json").write_text('{"status": "completed", "dataset": ')
    write_run(tmp_path / "f", 0.5, seed=5, status="completed").joinpath("summary.json").write_text(
        json.dumps({"status": "completed", "dataset": "cifar10"}))
    assert leaderboard_main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    ce = cell(board, loss="ce")
    assert (ce["n_seeds"], ce["n_failed"], ce["n_incomplete"]) == (2, 2, 0)
    assert ce["last_mean"] == pytest.approx(75.0) and ce["last_std"] == pytest.approx(math.sqrt(50.0))
    assert "e  unreadable" in out and "e/summary.json" in out and "Expecting value" in out
    assert "f  unreadable" in out and "no 'model' field" in out
    assert "c  diverged" in out and "epoch 4" in out and "d  failed" in out and "RuntimeError: boom" in out
    md = (tmp_path / "leaderboard.md").read_text()
    assert "## Runs not averaged (4)" in md
    assert re.search(r"\| e \| unreadable \|\s*\| corrupt .*e/summary.json", md)
    assert "| ce | **75.00 ± 7.07** (2 failed) |" in md


def test_a_run_without_summary_is_incomplete_in_the_cell_its_config_names(tmp_path):
    cfg = compose_config(["dataset=cifar10", "model=cnn8", "loss=sce", "noise.rate=0.4", "trainer.epochs=120"])
    params = build_loss(cfg.loss, 10, dataset="cifar10", noise="symmetric", rate=0.4).params
    write_run(tmp_path / "done", 0.6, loss="sce", loss_params=params, dataset="cifar10", model="cnn8")
    killed = tmp_path / "killed" / ".hydra"
    killed.mkdir(parents=True)
    (killed / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.merge(cfg, {"seed": 1})))
    (tmp_path / "killed" / "metrics.csv").write_text("epoch,test_acc\n1,0.2\n2,0.3\n")
    board = make_leaderboard(tmp_path)
    sce = cell(board.cells, loss="sce")
    assert (sce["n_seeds"], sce["n_incomplete"]) == (1, 1)
    assert [(p.path, p.status) for p in board.problems] == [("killed", "incomplete")]
    assert "2 of 120 epochs" in board.problems[0].detail


def test_two_settings_of_one_loss_are_two_cells_and_two_rows(tmp_path):
    for q, accs in ((0.3, (0.5, 0.6)), (0.7, (0.7, 0.8))):
        for seed, acc in enumerate(accs):
            write_run(tmp_path / f"q{q}_{seed}", acc, seed=seed, loss="gce",
                      loss_params={"preset": None, "q": q, "eps": 1e-7, "weight_decay": None})
    board = make_leaderboard(tmp_path)
    assert sorted(board.cells["last_mean"].round(6)) == [55.0, 75.0]
    assert set(board.cells["loss_params"]) == {"eps=1e-07, preset=null, q=0.3, weight_decay=null",
                                               "eps=1e-07, preset=null, q=0.7, weight_decay=null"}
    md = board.markdown()
    assert "| gce (q=0.3) | 55.00 ± 7.07 |" in md and "| gce (q=0.7) | **75.00 ± 7.07** |" in md


def test_the_same_cell_and_seed_twice_counts_once(tmp_path):
    write_run(tmp_path / "sweep1" / "0", 0.6, seed=0)
    write_run(tmp_path / "sweep2" / "0", 0.6, seed=0)
    write_run(tmp_path / "sweep2" / "1", 0.8, seed=1)
    board = make_leaderboard(tmp_path)
    ce = cell(board.cells, loss="ce")
    assert ce["n_seeds"] == 2 and ce["last_mean"] == pytest.approx(70.0)
    assert [(p.path, p.status) for p in board.problems] == [("sweep2/0", "duplicate")]
    assert "sweep1/0" in board.problems[0].detail


def test_empty_directory_is_one_line_and_exit_code_2(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-m", "noisybench.leaderboard", str(tmp_path / "empty")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no runs under") and str(tmp_path / "empty") in lines[0]
    assert not (tmp_path / "empty" / "leaderboard.csv").exists()
    assert leaderboard_main([str(tmp_path / "missing")]) == 2


def test_paper_number_and_delta_for_cells_the_reference_holds(tmp_path):
    cifar10 = {"dataset": "cifar10", "model": "cnn8"}
    # eps-softmax Table 2, CIFAR-10 NCE+RCE Sym 0.4: 85.13 ± 0.56 (last epoch)
    write_run(tmp_path / "nce_rce" / "0", 0.85, 0.87, seed=0, loss="nce_rce", **cifar10)
    write_run(tmp_path / "nce_rce" / "1", 0.86, 0.88, seed=1, loss="nce_rce", **cifar10)
    # eps-softmax Table 6: GCE (q = 0.3), CIFAR-100 Sym 0.4: 38.72 (the ablation row beats Table 2's 56.60)
    write_run(tmp_path / "gce", 0.40, dataset="cifar100", model="resnet34", loss="gce",
              loss_params={"preset": None, "q": 0.3, "eps": 1e-7, "weight_decay": None})
    # eps-softmax Table 4, CIFAR-10N aggregate, CE: 87.77 ± 0.38 (best epoch)
    write_run(tmp_path / "human", 0.85, 0.88, dataset="cifar10", model="resnet34", noise="human", variant=None,
              rate=0.0)
    # the paper's CIFAR-10 model is cnn8: a resnet18 run has no paper number, nor has an MNIST run without APL's preset
    write_run(tmp_path / "other_model", 0.85, dataset="cifar10", model="resnet18", loss="nce_rce")
    write_run(tmp_path / "mnist", 0.85, loss="nce_rce")
    leaderboard_main([str(tmp_path)])
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    nce = cell(board, loss="nce_rce", model="cnn8")
    assert (nce["paper"], nce["paper_std"], nce["paper_metric"]) == (85.13, 0.56, "last")
    assert nce["delta"] == pytest.approx(85.5 - 85.13)
    assert "Table 2" in nce["paper_source"]
    gce = cell(board, loss="gce")
    assert (gce["paper"], gce["paper_std"]) == (38.72, 0.87) and "Table 6" in gce["paper_source"]
    human = cell(board, noise="human")
    assert human["variant"] == "aggre"
    assert (human["paper"], human["paper_metric"]) == (87.77, "best")
    assert human["delta"] == pytest.approx(88.0 - 87.77)
    assert math.isnan(cell(board, model="resnet18")["paper"]) and math.isnan(cell(board, dataset="mnist")["paper"])
    md = (tmp_path / "leaderboard.md").read_text()
    assert "**85.50 ± 0.71** (paper 85.13 ∈ CI)" in md
    assert "**88.00** (paper 87.77)" in md  # in the best-epoch table, the metric CIFAR-N reports


def write_preset_run(run_dir: Path, experiment: str, loss: str, noise: str, variant: str, rate: float, last: float,
                     seed: int = 0) -> Path:
    """A run of one cell of ``experiment=<experiment>``: its model, epochs, noise variant and preset-resolved loss
    hyperparameters, as the sweep's own runs record them."""
    cfg = compose_config([f"experiment={experiment}", f"loss={loss}", f"noise={noise}", f"noise.variant={variant}",
                          f"noise.rate={rate}"])
    params = build_loss(cfg.loss, 10, dataset=cfg.dataset.name, noise=noise, rate=rate).params
    return write_run(run_dir, last, seed=seed, loss=loss, loss_params=params, dataset=cfg.dataset.name,
                     model=cfg.model.name, noise=noise, variant=cfg.noise.variant, rate=rate,
                     epochs=cfg.trainer.epochs)


def test_apl_mnist_cells_get_the_apl_notebook_numbers_and_other_presets_do_not(tmp_path):
    sweep = tmp_path / "multirun" / "apl_mnist"
    # APL notebook (plot_results.ipynb @ fdd52a2, cell 6), MNIST-Sym NCE+RCE 0.8: 75.18 ± 1.19, last epoch
    for seed, acc in enumerate((0.75, 0.76, 0.77)):
        write_preset_run(sweep / f"nce_rce_sym0.8_{seed}", "apl_mnist", "nce_rce", "symmetric", "exact", 0.8, acc,
                         seed=seed)
    # MNIST-Sym CE clean (a symmetric run at rate 0 is the Clean column): 99.25; MNIST-Asym NCE+RCE 0.4: 93.12
    write_preset_run(sweep / "ce_clean", "apl_mnist", "ce", "symmetric", "exact", 0.0, 0.99)
    write_preset_run(sweep / "nce_rce_asym0.4", "apl_mnist", "nce_rce", "asymmetric", "apl_cascade", 0.4, 0.93)
    # the mnist_apl reproduction takes APL's SCE: MNIST-Sym SCE 0.8, 74.70
    write_preset_run(tmp_path / "multirun" / "mnist_apl" / "sce", "mnist_apl", "sce", "symmetric", "exact", 0.8, 0.70)
    # ALFs' preset (NCE+RCE beta 100, its own noise and seeds) is not APL's protocol: no number
    write_preset_run(tmp_path / "multirun" / "alfs_mnist" / "nce_rce", "alfs_mnist", "nce_rce", "symmetric",
                     "sampled", 0.8, 0.80)
    assert leaderboard_main([str(sweep)]) == 0
    board = pd.read_csv(sweep / "leaderboard.csv")
    nce = cell(board, loss="nce_rce", noise="symmetric", rate=0.8)
    assert (nce["model"], nce["epochs"], nce["n_seeds"]) == ("cnn4", 50, 3)
    assert (nce["paper"], nce["paper_std"], nce["paper_metric"]) == (75.18, 1.19, "last")
    assert nce["delta"] == pytest.approx(76.0 - 75.18)
    assert "plot_results.ipynb @ fdd52a2" in nce["paper_source"] and "MNIST-Sym" in nce["paper_source"]
    assert cell(board, loss="ce")["paper"] == 99.25
    assert cell(board, loss="nce_rce", noise="asymmetric")["paper"] == 93.12
    assert "**76.00 ± 1.00** (paper 75.18 ∈ CI)" in (sweep / "leaderboard.md").read_text()
    everything = make_leaderboard(tmp_path).cells
    assert cell(everything, loss="sce")["paper"] == 74.70
    alfs = cell(everything, loss="nce_rce", variant="sampled")
    assert "preset=alfs" in alfs["loss_params"] and math.isnan(alfs["paper"])


def test_the_apl_notebook_rows_cover_both_mnist_tables():
    from noisybench.losses import LOSSES

    papers = load_paper_results()
    apl = papers[papers["paper"] == "APL authors' notebook (plot_results.ipynb @ fdd52a2)"]
    # 19 methods x (clean + 4 symmetric rates) and x 4 asymmetric rates
    assert len(apl) == 19 * 9 and set(apl["metric"]) == {"last"} and set(apl["runs"]) == {3}
    settings = set(apl[["dataset", "model", "params"]].itertuples(index=False))
    assert settings == {("mnist", "cnn4", "preset=apl|mnist_apl")}
    assert set(apl["loss"]) - set(LOSSES.names()) == {"gce_mae", "gce_nce", "gce_rce", "nfl_nce", "ngce_nce", "nlnl"}
    sym = cell(apl, table="cell 6 MNIST-Sym", loss="ngce_rce", rate=0.6)
    asym = cell(apl, table="cell 6 MNIST-Asym", loss="nce", rate=0.1)
    assert (sym["mean"], sym["std"], asym["mean"], asym["std"]) == (97.55, 0.17, 69.15, 3.60)


def test_best_mean_of_each_column_is_bold_in_markdown_and_latex(tmp_path):
    for loss, accs in (("ce", (0.60, 0.90)), ("gce", (0.70, 0.80)), ("sce", (0.70, 0.85))):
        for rate, acc in zip((0.2, 0.4), accs):
            write_run(tmp_path / f"{loss}_{rate}", acc, loss=loss, rate=rate)
    board = make_leaderboard(tmp_path)
    md = board.markdown()
    table = md.split("## mnist · cnn4 · 120 epochs · last epoch")[1].split("##")[0]
    assert "| loss | symmetric 0.2 | symmetric 0.4 |" in table
    assert "| ce | 60.00 | **90.00** |" in table
    assert "| gce | **70.00** | 80.00 |" in table  # a tie: both bold
    assert "| sce | **70.00** | 85.00 |" in table
    tex = board.latex()
    assert r"ce & $60.00$ & $\mathbf{90.00}$ \\" in tex and r"\toprule" in tex


def test_paper_results_hold_the_reference_numbers():
    papers = load_paper_results()
    from noisybench.losses import LOSSES

    table2 = papers[papers["table"] == "Table 2"]
    assert len(table2) == 2 * 15 * 9 and set(table2["metric"]) == {"last"}
    assert set(table2["loss"]) <= set(LOSSES.names()) | {"nlnl"}
    picks = {  # (table, dataset, noise, rate, loss, params) -> (mean, std), read off the reference text
        ("Table 2", "cifar10", "none", 0.0, "ce", ""): (90.50, 0.35),
        ("Table 2", "cifar10", "asymmetric", 0.4, "nce_agce", ""): (79.28, 0.37),
        ("Table 2", "cifar100", "symmetric", 0.8, "fl_eps_mae", ""): (26.73, 0.45),
        ("Table 3", "cifar100", "symmetric", 0.4, "ce_eps_mae", "m=0"): (37.00, 0.40),
        ("Table 6", "cifar100", "symmetric", 0.4, "ce_eps_mae", "m=0"): (39.72, 0.67),
        ("Table 8", "cifar100", "instance", 0.6, "ce_eps_mae", ""): (46.53, 0.54),
        ("Table 4", "cifar10", "human", 0.0, "ce_eps_mae", ""): (91.80, 0.33),
    }
    for (table, dataset, noise, rate, loss, params), (mean, std) in picks.items():
        row = cell(papers, table=table, dataset=dataset, noise=noise, rate=rate, loss=loss, params=params,
                   **({"variant": "aggre"} if noise == "human" else {}))
        assert (row["mean"], row["std"]) == (mean, std)
    sce = cell(papers, paper="SCELoss-Reproduce README", dataset="cifar100", rate=0.8, loss="sce")
    assert (sce["mean"], sce["metric"], sce["model"]) == (12.51, "best", "resnet34")
    assert set(papers.loc[papers["table"] == "Table 4", "metric"]) == {"best"}


@pytest.mark.skipif(not REFERENCE.is_file(), reason=f"{REFERENCE} not found")
def test_every_table2_number_equals_the_reference_text():
    text = REFERENCE.read_text(encoding="utf-8")
    section = text[text.index("### 7.1"):text.index("### 7.2")]
    papers = load_paper_results()
    blocks = section.split("**CIFAR-100**")
    checked = 0
    for dataset, block in zip(("cifar10", "cifar100"), blocks):
        for line in block.splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not line.startswith("| ") or cells[0] in ("Method", "---"):
                continue
            rows = papers[(papers["table"] == "Table 2") & (papers["dataset"] == dataset)
                          & (papers["method"] == cells[0])]
            assert [f"{m:.2f}±{s:.2f}" for m, s in zip(rows["mean"], rows["std"])] == cells[1:], cells[0]
            checked += 1
    assert checked == 30


def test_callback_writes_the_sweep_leaderboard_and_prints_it(tmp_path, capsys):
    sweep = tmp_path / "multirun"
    write_run(sweep / "loss=ce,seed=0", 0.7, seed=0)
    write_run(sweep / "loss=ce,seed=1", 0.8, seed=1)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    LeaderboardCallback(plots=False).on_multirun_end(config=config)
    board = pd.read_csv(sweep / "leaderboard.csv")
    assert cell(board, loss="ce")["last_mean"] == pytest.approx(75.0)
    assert (sweep / "leaderboard.md").is_file() and (sweep / "leaderboard.tex").is_file()
    assert "| ce | **75.00 ± 7.07** |" in capsys.readouterr().out


def test_callback_never_raises(tmp_path, caplog, monkeypatch):
    empty = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "nothing")}}})
    LeaderboardCallback().on_multirun_end(config=empty)
    assert "no leaderboard" in caplog.text and "nothing" in caplog.text
    write_run(tmp_path / "sweep" / "0", 0.7)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("noisybench.leaderboard.make_leaderboard", broken)
    LeaderboardCallback().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert "disk full" in caplog.text
