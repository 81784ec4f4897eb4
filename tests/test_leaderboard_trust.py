"""Results a user can trust: folders without a run, settings kept apart, unreadable metrics, plots, bands."""
from __future__ import annotations

import pandas as pd
import pytest
from omegaconf import OmegaConf

from helpers import compose_config
from noisybench.artifacts import fingerprint
from noisybench.callbacks import LeaderboardCallback
from noisybench.leaderboard import CELL_KEYS, LEADERBOARD_COLUMNS, NoRunsError, make_leaderboard
from noisybench.leaderboard.__main__ import main as leaderboard_main
from noisybench.plots import acc_vs_rate_figure, mean_curves, read_metrics
from test_leaderboard import write_run


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


def write_digits_run(run_dir, overrides: list[str], acc: float, *, old_style: bool = False):
    """A completed digits run of the composed config: its summary.json records the config's fingerprint
    (``old_style``: no fingerprint, as runs written before it; only .hydra/config.yaml tells the settings)."""
    cfg = compose_config(overrides)
    write_config(run_dir, overrides)
    extra = {} if old_style else {"config": fingerprint(cfg)}
    return write_run(run_dir, acc, seed=cfg.seed, dataset="digits", model="small_cnn", rate=cfg.noise.rate,
                     epochs=cfg.trainer.epochs, **extra)


def test_a_learning_rate_sweep_is_three_cells_of_four_seeds_with_a_trainer_lr_column(tmp_path):
    # python -m noisybench --multirun trainer.lr=0.5,2,8 trainer.grad_clip=null seed=0,1,2,3 trainer.epochs=3
    for lr, acc in (("0.5", 0.9), ("2", 0.5), ("8", 0.1)):
        for seed in range(4):
            write_digits_run(tmp_path / f"seed={seed},trainer.grad_clip=null,trainer.lr={lr}",
                             [f"trainer.lr={lr}", "trainer.grad_clip=null", f"seed={seed}", "trainer.epochs=3"],
                             acc + seed / 100)
    board = make_leaderboard(tmp_path)
    assert board.counts() == {"runs": 12, "completed": 12, "failed": 0, "incomplete": 0, "unreadable": 0,
                              "duplicate": 0}
    assert board.problems == []
    assert board.cells["trainer.lr"].tolist() == ["0.5", "2", "8"]
    assert board.cells["n_seeds"].tolist() == [4, 4, 4]
    assert board.cells["last_mean"].tolist() == pytest.approx([91.5, 51.5, 11.5])
    paths = board.write()
    header = paths["csv"].read_text().splitlines()[0].split(",")
    # The swept key follows the cell's other columns; keys equal in every run (grad_clip, epochs) add none.
    assert header[:9] == [*CELL_KEYS, "trainer.lr"] and header[9:] == list(LEADERBOARD_COLUMNS[8:])
    md = paths["md"].read_text()
    assert "| loss | trainer.lr | symmetric 0 |" in md
    assert "| ce | 0.5 | **91.50 ± 1.29** |" in md and "| ce | 8 | 11.50 ± 1.29 |" in md
    tex = paths["tex"].read_text()
    assert r"Loss & trainer.lr & symmetric 0 \\" in tex and r"ce & 2 & $51.50 \pm 1.29$ \\" in tex
    assert board.report().endswith("12 completed; 3 cells (told apart also by trainer.lr).")


def test_a_subset_and_the_full_training_set_are_two_cells_though_only_hydra_configs_tell_them_apart(tmp_path):
    # python -m noisybench --multirun dataset.train_size=300,null trainer.epochs=2, by runs whose
    # summary.json predates the recorded config
    write_digits_run(tmp_path / "dataset.train_size=300", ["dataset.train_size=300", "trainer.epochs=2"], 0.6,
                     old_style=True)
    write_digits_run(tmp_path / "dataset.train_size=null", ["dataset.train_size=null", "trainer.epochs=2"], 0.8,
                     old_style=True)
    board = make_leaderboard(tmp_path)
    assert board.problems == [] and len(board.cells) == 2
    assert dict(zip(board.cells["dataset.train_size"], board.cells["last_mean"])) == pytest.approx(
        {"300": 60.0, "null": 80.0})
    csv = pd.read_csv(board.write()["csv"], keep_default_na=False)
    assert sorted(csv["dataset.train_size"].astype(str)) == ["300", "null"]


def test_the_same_config_and_seed_twice_is_still_a_duplicate_named_by_its_folder(tmp_path):
    for sweep in ("sweep1", "sweep2"):
        for lr in ("0.5", "2"):
            write_digits_run(tmp_path / sweep / f"trainer.lr={lr}", [f"trainer.lr={lr}", "trainer.epochs=3"], 0.7)
    board = make_leaderboard(tmp_path)
    assert board.cells["n_seeds"].tolist() == [1, 1]
    assert [(p.path, p.status) for p in board.problems] == [("sweep2/trainer.lr=0.5", "duplicate"),
                                                           ("sweep2/trainer.lr=2", "duplicate")]
    assert "sweep1/trainer.lr=0.5" in board.problems[0].detail and "trainer.lr=0.5" in board.problems[0].cell


def test_a_config_that_cannot_be_resolved_leaves_its_run_apart_not_the_leaderboard_crashed(tmp_path, caplog):
    write_digits_run(tmp_path / "a", ["trainer.lr=0.5", "trainer.epochs=3"], 0.7, old_style=True)
    write_digits_run(tmp_path / "b", ["trainer.lr=2", "trainer.epochs=3"], 0.6, old_style=True)
    odd = write_digits_run(tmp_path / "c", ["trainer.lr=0.5", "trainer.epochs=3"], 0.5, old_style=True)
    config = odd / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("lr: 0.5", "lr: ${oc.env:NOISYBENCH_NO_SUCH_VARIABLE}"))
    board = make_leaderboard(tmp_path)
    assert board.problems == []
    assert dict(zip(board.cells["trainer.lr"], board.cells["last_mean"])) == pytest.approx(
        {"0.5": 70.0, "2": 60.0, "?": 50.0})
    assert str(config) in caplog.text and "NOISYBENCH_NO_SUCH_VARIABLE" in caplog.text


def test_an_interpolation_in_a_hydra_config_is_resolved_before_cells_are_told_apart(tmp_path):
    write_digits_run(tmp_path / "a", ["trainer.lr=2", "trainer.epochs=3"], 0.6, old_style=True)
    b = write_digits_run(tmp_path / "b", ["trainer.lr=2", "trainer.epochs=3", "seed=1"], 0.7, old_style=True)
    write_digits_run(tmp_path / "c", ["trainer.lr=0.5", "trainer.epochs=3"], 0.8, old_style=True)
    config = b / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("lr: 2", "lr: ${oc.decode:'2'}"))
    board = make_leaderboard(tmp_path)
    assert dict(zip(board.cells["trainer.lr"], board.cells["n_seeds"])) == {"0.5": 1, "2": 2}


def test_paper_numbers_still_match_cells_split_by_a_swept_key(tmp_path):
    # eps-softmax Table 2, CIFAR-10 NCE+RCE Sym 0.4: 85.13 (last epoch), whatever the batch size
    for batch_size in (64, 128):
        config = {"dataset": {"name": "cifar10"}, "noise": {}, "model": {"name": "cnn8"}, "loss": {}, "seed": 0,
                  "trainer": {"epochs": 120, "batch_size": batch_size, "device": f"cuda:{batch_size // 64}"}}
        write_run(tmp_path / str(batch_size), 0.85, loss="nce_rce", dataset="cifar10", model="cnn8", config=config)
    config["trainer"]["batch_size"] = 256
    write_run(tmp_path / "mnist", 0.99, config=config)
    board = make_leaderboard(tmp_path)
    cifar10 = board.cells[board.cells["dataset"] == "cifar10"]
    assert cifar10["trainer.batch_size"].tolist() == ["64", "128"]
    assert cifar10["paper"].tolist() == [85.13, 85.13]
    assert "trainer.device" not in board.cells  # runtime settings never split a cell
    # A table shows the keys that differ between its own cells.
    md = board.markdown()
    assert "| loss | trainer.batch_size | symmetric 0.4 |" in md and "| ce | **99.00** |" in md
    assert "| nce_rce | 64 | **85.00** (paper 85.13) |" in md


def test_sweep_curves_and_lines_keep_swept_settings_apart(tmp_path):
    for lr, acc in (("0.5", 0.9), ("8", 0.1)):
        for seed in range(2):
            run = write_digits_run(tmp_path / f"lr{lr}_{seed}", [f"trainer.lr={lr}", f"seed={seed}",
                                                                  "trainer.epochs=2"], acc)
            (run / "metrics.csv").write_text(f"epoch,test_acc\n1,{acc / 2}\n2,{acc}\n")
    board = make_leaderboard(tmp_path)
    curves, _ = mean_curves(board.runs)
    assert sorted(key[-1] for key in curves) == ["0.5", "8"]
    for key, curve in curves.items():
        assert curve.tolist() == pytest.approx({"0.5": [45.0, 90.0], "8": [5.0, 10.0]}[key[-1]])
    fig = acc_vs_rate_figure(board.cells)
    assert [t.get_text() for t in fig.legends[0].get_texts()][:2] == ["ce · trainer.lr=0.5", "ce · trainer.lr=8"]


GOOD_METRICS = "epoch,lr,train_loss,test_acc\n1,0.1,nan,0.25\n2,0.1,2.5,0.5\n3,0.1,2.0,0.75\n"


@pytest.mark.parametrize("content, reason", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe garbage\n", "not CSV"),
    (b'{"epoch": 1, "test_acc": 0.5}\n', "no column epoch"),
    (b"epoch,loss\n1,2.0\n", "no column test_acc"),
    (b"epoch,test_acc\n1,0.25\n2,0.5\n3,0.7", "last line cut short"),
    (b"epoch,test_acc\n1,0.25\n2,0.5\n3,\n", "test_acc: 1 empty value"),
    (b"epoch,test_acc\n1,0.25\n2,abc\n3,0.75\n", "test_acc: 'abc' (line 3) is not a number"),
    (b"epoch,test_acc\n1,25.0\n2,50.0\n3,75.0\n", "test_acc: 25 (line 2) is outside [0, 1]"),
    (b"epoch,test_acc\n1,0.25\n1,0.5\n3,0.75\n", "epochs 1, 1, 3"),
], ids=["binary", "json", "no-test_acc", "truncated", "empty", "text", "percent", "epochs"])
def test_metrics_that_cannot_be_trusted_are_refused_with_the_file_and_the_fault(tmp_path, content, reason):
    (tmp_path / "metrics.csv").write_bytes(content)
    with pytest.raises(ValueError) as e:
        read_metrics(tmp_path, ["epoch", "test_acc"])
    assert reason in str(e.value) and str(tmp_path / "metrics.csv") in str(e.value)


def test_good_metrics_are_read_with_a_diverged_loss_and_checked_against_the_epoch_count(tmp_path):
    (tmp_path / "metrics.csv").write_text(GOOD_METRICS)
    assert read_metrics(tmp_path, ["epoch", "test_acc"], epochs=3)["test_acc"].tolist() == [0.25, 0.5, 0.75]
    assert read_metrics(tmp_path)["train_loss"].isna().tolist() == [True, False, False]
    with pytest.raises(ValueError, match=r"epochs 1, 2, 3 of 5"):
        read_metrics(tmp_path, ["epoch", "test_acc"], epochs=5)


def test_runs_with_unreadable_metrics_are_named_and_left_out_of_the_curves(tmp_path, capsys):
    for seed, name in enumerate(("good0", "good1", "garbage", "truncated")):
        write_run(tmp_path / name, 0.75, seed=seed, epochs=3)
    for name, accs in (("good0", (0.2, 0.4, 0.6)), ("good1", (0.4, 0.6, 0.8))):
        (tmp_path / name / "metrics.csv").write_text("epoch,test_acc\n" + "".join(
            f"{e},{a}\n" for e, a in enumerate(accs, 1)))
    (tmp_path / "garbage" / "metrics.csv").write_bytes(b"\x00\x9f\x92\x96 not a table \xff\n")
    (tmp_path / "truncated" / "metrics.csv").write_text("epoch,test_acc\n1,0.9\n2,0.9\n3,0.")
    board = make_leaderboard(tmp_path)
    curves, unplotted = mean_curves(board.runs)
    assert list(curves.values())[0].tolist() == pytest.approx([30.0, 50.0, 70.0])
    assert [(p.path, p.status) for p in unplotted] == [("garbage/metrics.csv", "unplotted"),
                                                      ("truncated/metrics.csv", "unplotted")]
    assert leaderboard_main([str(tmp_path), "--plots"]) == 0
    out = capsys.readouterr().out
    assert "not plotted: 2 runs with unreadable metrics.csv:" in out
    assert "  garbage/metrics.csv (not CSV: " in out and "  truncated/metrics.csv (last line cut short" in out
    assert (tmp_path / "acc_vs_epoch_mnist_cnn4_3ep.png").is_file()


def test_the_leaderboard_command_writes_the_sweep_plots_unless_told_not_to(tmp_path, capsys):
    plots = [tmp_path / "acc_vs_rate.png", tmp_path / "acc_vs_epoch_mnist_cnn4_3ep.png"]
    for seed in range(2):
        run = write_run(tmp_path / str(seed), 0.5, seed=seed, epochs=3)
        (run / "metrics.csv").write_text("epoch,test_acc\n1,0.1\n2,0.3\n3,0.5\n")
    assert leaderboard_main([str(tmp_path), "--no-plots"]) == 0
    assert not any(p.exists() for p in plots) and "acc_vs" not in capsys.readouterr().out
    assert leaderboard_main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(p.stat().st_size > 0 and str(p) in out for p in plots)
    for p in plots:
        p.unlink()
    assert leaderboard_main([str(tmp_path), "--plots"]) == 0  # the old flag, still accepted
    assert all(p.is_file() for p in plots)


def test_the_rate_plot_says_what_its_band_is_and_draws_none_at_one_seed(tmp_path):
    for rate, seeds in ((0.2, 3), (0.4, 2), (0.6, 1)):
        for seed in range(seeds):
            write_run(tmp_path / f"ce_{rate}_{seed}", 0.9 - rate + seed / 100, seed=seed, rate=rate)
    write_run(tmp_path / "gce_0.2", 0.8, loss="gce", rate=0.2)
    write_run(tmp_path / "gce_0.4", 0.7, loss="gce", rate=0.4)
    board = make_leaderboard(tmp_path)
    fig = acc_vs_rate_figure(board.cells)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == ["ce", "gce"]
    assert legend[2] == ("lines: mean over seeds\nshaded, between points of ≥ 2\nseeds: ± 1 sample std (ddof=1),\n"
                         "n = 2–3 seeds")
    (ax,) = fig.axes
    (band,) = ax.collections  # ce's only: gce has one seed per rate
    xs = band.get_paths()[0].vertices[:, 0]
    assert (xs.min(), xs.max()) == pytest.approx((0.2, 0.4))  # not on to rate 0.6, one seed
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.max() == pytest.approx(71.0 + 1.0) and ys.min() == pytest.approx(50.5 - 0.5 ** 0.5)
    one_seed = make_leaderboard(tmp_path / "gce_0.2").cells
    assert [t.get_text() for t in acc_vs_rate_figure(one_seed).legends[0].get_texts()] == ["gce"]


def test_a_sweeps_end_names_the_runs_it_could_not_plot(tmp_path, caplog):
    for seed in range(2):
        write_run(tmp_path / str(seed), 0.5, seed=seed, epochs=1)
    (tmp_path / "0" / "metrics.csv").write_text("epoch,test_acc\n1,0.5\n")
    (tmp_path / "1" / "metrics.csv").write_text("epoch,test_acc\n1,50.0\n")
    LeaderboardCallback().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert "not plotted: 1 run with unreadable metrics.csv:\n  1/metrics.csv (test_acc: 50 (line 2) is outside [0, 1])" \
        in caplog.text
    assert (tmp_path / "acc_vs_epoch_mnist_cnn4_1ep.png").is_file()
