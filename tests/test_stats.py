"""Which loss wins, and how sure: ranks, Friedman and Nemenyi tests, paired tests over seeds, the
critical-difference diagram and the paper's number against our interval, on run folders whose answers
are known."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy import stats as st

from noisybench.callbacks import LeaderboardCallback
from noisybench.leaderboard import make_leaderboard
from noisybench.leaderboard.__main__ import main as leaderboard_main
from noisybench.leaderboard.stats import rank_groups
from noisybench.plots import cd_diagram_figure
from test_leaderboard import cell, write_run

U = 1 / 128  # accuracies in steps of 1/128 are exact in binary: equal means are equal, not 1 ulp apart
RATES = [round(0.05 * i, 2) for i in range(1, 13)]  # twelve settings
# Per setting and seed (0, 1, 2), in steps U around the setting's base accuracy: sce 12 steps above
# the rest, fl 12 below, and ce and gce the same three values on different seeds (equal means).
OFFSETS = {"sce": (12, 13, 11), "ce": (1, -1, 0), "gce": (-1, 0, 1), "fl": (-12, -13, -11)}


def base(setting: int) -> float:
    return (96 - 2 * setting) * U


def write_known_sweep(root, losses=OFFSETS, rates=RATES, seeds=(0, 1, 2)):
    """One run per loss, setting (symmetric noise rate) and seed; accuracies from ``OFFSETS``."""
    for i, rate in enumerate(rates):
        for loss in losses:
            for seed in seeds:
                write_run(root / f"{loss}_{rate}_{seed}", base(i) + losses[loss][seed] * U, seed=seed, loss=loss,
                          rate=rate, epochs=3)
    return root


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    return make_leaderboard(write_known_sweep(tmp_path_factory.mktemp("known")))


def test_a_loss_better_in_every_setting_ranks_first_and_two_equal_losses_share_their_rank(known):
    ranking = known.stats.rankings["last"]
    ranks = dict(zip(ranking.methods["method"], ranking.methods["avg_rank"]))
    assert ranks == {"sce": 1.0, "ce": 2.5, "gce": 2.5, "fl": 4.0}
    assert ranking.n_settings == 12 and ranking.seeds == (3, 3)
    assert ranking.test == "Friedman" and ranking.p_value < 0.05
    assert ranking.methods.set_index("method")["wins"].to_dict() == {"sce": 12, "ce": 0, "gce": 0, "fl": 0}
    # Nemenyi: CD = q(0.05; 4, inf) / sqrt 2 * sqrt(4 * 5 / (6 * 12)) = 1.354 < the 1.5 between the groups
    assert ranking.cd == pytest.approx(st.studentized_range.ppf(0.95, 4, math.inf) / math.sqrt(2)
                                       * math.sqrt(20 / 72))
    assert ranking.cd == pytest.approx(1.354, abs=1e-3)
    p = ranking.posthoc
    assert p.at["sce", "ce"] < 0.05 and p.at["ce", "fl"] < 0.05 and p.at["sce", "fl"] < 0.001
    assert p.at["ce", "gce"] == pytest.approx(1.0)
    assert ranking.groups == [["sce"], ["ce", "gce"], ["fl"]]
    assert ranking.methods["group"].tolist() == ["a", "b", "b", "c"]


def test_the_friedman_statistic_equals_scipys_on_the_same_table(known):
    means = {loss: [sum(base(i) + o * U for o in OFFSETS[loss]) / 3 * 100 for i in range(len(RATES))]
             for loss in OFFSETS}
    expected = st.friedmanchisquare(*means.values())
    for metric in ("last", "best"):  # write_run's best epoch is its last
        ranking = known.stats.rankings[metric]
        assert ranking.statistic == pytest.approx(expected.statistic, rel=1e-12)
        assert ranking.p_value == pytest.approx(expected.pvalue, rel=1e-9)
        assert ranking.df == 3
        table = ranking.scores[["ce", "fl", "gce", "sce"]].to_numpy()
        assert table == pytest.approx(pd.DataFrame(means)[["ce", "fl", "gce", "sce"]].to_numpy())


def test_paired_tests_over_seeds_find_the_clear_margin_and_not_the_equal_pair(known):
    pairs = known.stats.pairs
    assert len(pairs) == 2 * 12 * 6 and set(pairs["n_pairs"]) == {3} and set(pairs["seeds"]) == {"0 1 2"}
    last = pairs[pairs["metric"] == "last"]
    better = last[(last["method_a"] == "ce") & (last["method_b"] == "sce")]
    assert len(better) == 12 and (better["p_value"] < 0.05).all()
    # ce - sce per seed: -11, -14, -11 steps
    diffs = [-11 * U * 100, -14 * U * 100, -11 * U * 100]
    expected = st.ttest_rel([0, 0, 0], [-d for d in diffs])
    assert better["diff"].to_numpy() == pytest.approx(sum(diffs) / 3)
    assert better["p_value"].to_numpy() == pytest.approx(expected.pvalue)
    ci = expected.confidence_interval(0.95)
    assert better["ci_low"].to_numpy() == pytest.approx(ci.low) and better["ci_high"].to_numpy() == pytest.approx(ci.high)
    assert (better["ci_high"] < 0).all()
    equal = last[(last["method_a"] == "ce") & (last["method_b"] == "gce")]
    assert equal["p_value"].tolist() == pytest.approx([1.0] * 12) and (equal["diff"].abs() < 1e-9).all()
    assert (equal["ci_low"] < 0).all() and (equal["ci_high"] > 0).all()


def test_the_diagram_joins_the_expected_groups_and_says_what_it_shows(known):
    ranking = known.stats.rankings["last"]
    fig = cd_diagram_figure(ranking)
    (ax,) = fig.axes
    bars = [sorted(line.get_xdata()) for line in ax.lines
            if len(set(line.get_ydata())) == 1 and line.get_ydata()[0] < 0]
    assert bars == [[2.5, 2.5]]  # one bar: ce and gce; sce and fl stand alone
    texts = [t.get_text() for t in ax.texts]
    assert "sce (1.00)" in texts and "(4.00) fl" in texts
    assert any("critical difference (Nemenyi) = 1.35" in t for t in texts)
    title = fig._suptitle.get_text()
    assert "last epoch" in title and "12 settings × 4 losses, 3 seeds per cell" in title
    assert "Friedman p = " in title and "Nemenyi test (α = 0.05)" in title


def test_rank_groups_are_the_longest_runs_no_pair_of_which_differs():
    names = ["a", "b", "c", "d"]
    p = pd.DataFrame(1.0, index=names, columns=names)
    for x, y in (("a", "c"), ("a", "d"), ("b", "d")):
        p.at[x, y] = p.at[y, x] = 0.01
    assert rank_groups(names, p) == [["a", "b"], ["b", "c"], ["c", "d"]]
    assert rank_groups(names, pd.DataFrame(1.0, index=names, columns=names)) == [names]


def test_the_files_and_the_markdown_hold_the_ranks_and_the_tests(tmp_path, capsys):
    write_known_sweep(tmp_path)
    assert leaderboard_main([str(tmp_path), "--stats"]) == 0
    out = capsys.readouterr().out
    assert "## Ranks over settings" in out and "| 1 | sce | 1.00 | a | 12 | 0 |" in out
    assert "Friedman test (scipy.stats.friedmanchisquare): χ²(3) = " in out
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert len(board) == 48  # one row per cell, as before
    ranks = pd.read_csv(tmp_path / "ranks.csv")
    assert len(ranks) == 8 and set(ranks["metric"]) == {"last", "best"}
    first = ranks[ranks["metric"] == "last"].iloc[0]
    assert (first["method"], first["avg_rank"], first["group"], first["posthoc"]) == ("sce", 1.0, "a", "Nemenyi")
    pairs = pd.read_csv(tmp_path / "pairs.csv")
    assert len(pairs) == 2 * 12 * 6
    for metric in ("last", "best"):
        assert (tmp_path / f"cd_{metric}.png").stat().st_size > 0
    md = (tmp_path / "leaderboard.md").read_text()
    assert "### Last epoch" in md and "| 2 | ce | 2.50 | b | 0 | 0 |" in md
    assert "Critical-difference diagram: cd_last.png" in md
    # the paired table: each loss against the best of its setting, with n and the interval
    assert "| symmetric 0.05 | ce | sce | 3 | -9.38 [" in md
    assert "with 3 pairs a mean difference must exceed 4.30 of its standard errors" in md
    assert "No Wilcoxon signed-rank test can reach p < 0.05 with fewer than 6 pairs" in md


def test_two_equal_losses_are_not_told_apart_over_settings(tmp_path):
    board = make_leaderboard(write_known_sweep(tmp_path, {k: OFFSETS[k] for k in ("ce", "gce")}, RATES[:6]))
    ranking = board.stats.rankings["last"]
    assert ranking.test == "sign test" and ranking.p_value == 1.0
    assert ranking.groups == [["ce", "gce"]] and ranking.methods["avg_rank"].tolist() == [1.5, 1.5]
    assert (board.stats.pairs["p_value"] > 0.05).all()
    md = board.markdown()
    assert "ce wins 0 of 0 untied settings, p = 1.00: no difference shown" in md


def test_failed_runs_are_counted_ranked_last_or_left_out_and_unequal_seeds_are_flagged(tmp_path):
    write_known_sweep(tmp_path, rates=RATES[:5])
    # gce diverges on every seed at rate 0.05: it ranks last there
    for seed in range(3):
        write_run(tmp_path / f"gce_0.05_{seed}", None, seed=seed, loss="gce", rate=0.05, epochs=3, status="diverged")
    # sce crashes (an error, not divergence) on every seed at rate 0.1: that setting is left out
    for seed in range(3):
        write_run(tmp_path / f"sce_0.1_{seed}", None, seed=seed, loss="sce", rate=0.1, epochs=3, status="failed",
                  error="RuntimeError: CUDA out of memory")
    # fl diverges on one seed of three at rate 0.15: mean of the other two, flagged
    write_run(tmp_path / "fl_0.15_2", None, seed=2, loss="fl", rate=0.15, epochs=3, status="diverged")
    # a fourth seed of ce still training at rate 0.2: flagged, the three completed ones ranked
    write_run(tmp_path / "ce_0.2_3", None, seed=3, loss="ce", rate=0.2, epochs=3, status="running")
    board = make_leaderboard(tmp_path)
    stats = board.stats
    assert stats.ranked_last == [("symmetric 0.05", "gce")]
    assert stats.excluded == [("symmetric 0.1", "sce: failed (an error, not divergence)")]
    assert dict(stats.unequal) == {"symmetric 0.05": "ce 3, fl 3, gce 0 (3 diverged), sce 3",
                                   "symmetric 0.15": "ce 3, fl 2 (1 diverged), gce 3, sce 3",
                                   "symmetric 0.2": "ce 3 (1 incomplete), fl 3, gce 3, sce 3"}
    ranking = stats.rankings["last"]
    assert ranking.n_settings == 4 and ranking.seeds == (2, 3)
    assert list(ranking.scores.index) == ["symmetric 0.05", "symmetric 0.15", "symmetric 0.2", "symmetric 0.25"]
    assert ranking.ranks.at["symmetric 0.05", "gce"] == 4.0 and ranking.ranks.at["symmetric 0.05", "fl"] == 3.0
    assert ranking.methods.set_index("method")["ranked_last"].to_dict() == {"sce": 0, "ce": 0, "gce": 1, "fl": 0}
    # fl's two completed seeds at 0.15 pair with two of ce's three
    pair = stats.pairs[(stats.pairs["setting"] == "symmetric 0.15") & (stats.pairs["method_a"] == "ce")
                       & (stats.pairs["method_b"] == "fl") & (stats.pairs["metric"] == "last")].iloc[0]
    assert (pair["n_pairs"], pair["seeds"]) == (2, "0 1")
    md = board.markdown()
    assert "Ranked last for diverging: gce in symmetric 0.05." in md
    assert "Left out of the ranks: symmetric 0.1 (sce: failed (an error, not divergence))." in md
    assert "Unequal or failed seeds (flagged): symmetric 0.05: ce 3, fl 3, gce 0 (3 diverged), sce 3; " in md
    assert "ranks last there if one of them diverged" in md
    assert "| symmetric 0.15 | fl | sce | 2 |" in md


@pytest.mark.parametrize("case, line", [
    ("one loss", "No statistics: one loss (ce), nothing to rank it against; paired tests compare two losses."),
    ("one seed", "No statistics: only one setting (symmetric 0.4) where every loss can be ranked; ranks need two "
                 "or more; no two losses share two completed seeds (same seed and noise seed) in any setting, so no "
                 "paired test."),
    ("no complete cell", "No statistics: no setting where every loss completed a run (or diverged), so nothing to "
                         "rank; no two losses share two completed seeds (same seed and noise seed) in any setting, "
                         "so no paired test."),
])
def test_bad_input_is_one_line_and_the_plain_leaderboard_is_still_written(tmp_path, capsys, case, line):
    if case == "one loss":
        for seed in range(3):
            for rate in (0.2, 0.4):
                write_run(tmp_path / f"ce_{rate}_{seed}", 0.5 + seed / 100, seed=seed, rate=rate)
    elif case == "one seed":
        for loss in ("ce", "gce"):
            write_run(tmp_path / loss, 0.5, loss=loss)
    else:
        write_run(tmp_path / "ce", None, status="failed", error="RuntimeError: boom")
        write_run(tmp_path / "gce", None, loss="gce", status="incomplete")
    assert leaderboard_main([str(tmp_path), "--stats"]) == 0
    out = capsys.readouterr().out
    assert out.count("No statistics") == 1 and f"\n{line}\n" in out
    assert "Ranks over settings" not in out and "Paired tests" not in out
    assert (tmp_path / "leaderboard.csv").is_file() and f"\n{line}\n" in (tmp_path / "leaderboard.md").read_text()
    assert pd.read_csv(tmp_path / "ranks.csv").empty and pd.read_csv(tmp_path / "pairs.csv").shape[1] == 14
    assert not list(tmp_path.glob("cd_*.png"))


def test_the_papers_number_against_our_interval_over_seeds(tmp_path):
    cifar10 = {"dataset": "cifar10", "model": "cnn8"}  # eps-softmax Table 2, symmetric 0.4, last epoch
    for loss, accs in (("nce_rce", (0.85, 0.86)),  # paper 85.13: inside 85.50 ± 6.35
                       ("ce", (0.60, 0.61, 0.62)),  # paper 58.46: below 61.00 ± 2.48
                       ("gce", (0.70, 0.71, 0.72)),  # paper 82.24: above
                       ("sce", (0.80,))):  # paper 79.47: one seed, no interval
        for seed, acc in enumerate(accs):
            write_run(tmp_path / f"{loss}_{seed}", acc, seed=seed, loss=loss, **cifar10)
    write_run(tmp_path / "other", 0.5, dataset="cifar10", model="resnet18")  # no paper number
    board = make_leaderboard(tmp_path)
    cells = board.cells
    ce = cell(cells, loss="ce", model="cnn8")
    low, high = st.t.interval(0.95, 2, loc=61.0, scale=1.0 / math.sqrt(3))
    assert (ce["last_ci_low"], ce["last_ci_high"]) == pytest.approx((low, high))
    assert ce["paper_in_ci"] == "below"
    assert cell(cells, loss="nce_rce")["paper_in_ci"] == "inside"
    assert cell(cells, loss="gce")["paper_in_ci"] == "above"
    assert cell(cells, loss="sce")["paper_in_ci"] == "1 seed" and math.isnan(cell(cells, loss="sce")["last_ci_low"])
    assert pd.isna(cell(cells, model="resnet18")["paper_in_ci"])
    columns = list(cells.columns)
    assert columns[columns.index("delta") + 1] == "paper_in_ci"
    md = board.markdown()
    assert "| ce | 61.00 ± 1.00 (paper 58.46 < CI) |" in md
    assert "(paper 82.24 > CI)" in md and "(paper 85.13 ∈ CI)" in md and "| sce | 80.00 (paper 79.47) |" in md
    assert ("Paper numbers against our 95% t interval over seeds: 4 cells, 1 inside, 1 above it (the paper higher), "
            "1 below it (the paper lower), 1 with one seed (no interval).") in md


def test_a_sweeps_end_writes_the_ranks_and_the_diagrams_beside_the_leaderboard(tmp_path, capsys):
    write_known_sweep(tmp_path, rates=RATES[:4])
    LeaderboardCallback().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    for name in ("leaderboard.csv", "ranks.csv", "pairs.csv", "cd_last.png", "cd_best.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "## Ranks over settings" in capsys.readouterr().out
