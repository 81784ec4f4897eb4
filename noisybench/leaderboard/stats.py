"""Which loss wins, and how sure: ranks over settings and paired tests over seeds.

A *method* is a loss setting as the tables name its row (``render.row_labels``: the loss, its
preset, and the hyperparameters that tell two rows of one loss apart). A *setting* is a cell
without its loss: dataset, model, noise type, variant and rate, epochs, and the swept config keys.
A method's *score* in a setting, per metric (last or best epoch), is its mean test accuracy over
its completed seeds, as in the tables.

Across settings (Demšar 2006, JMLR 7): each method is ranked within each setting (1 = highest
score; ties share the average rank), ranks are averaged over the settings where every method can
be ranked, the Friedman test (``scipy.stats.friedmanchisquare``; with two methods, the sign test
it reduces to) asks whether the average ranks differ, and the Nemenyi post-hoc test
(``scikit_posthocs.posthoc_nemenyi_friedman``, family-wise error over all pairs) says which pairs
do; its critical difference (CD) is drawn in the diagram. Failed runs (``RANK_RULE``): a method
none of whose seeds completed in a setting ranks last there when at least one of them diverged (a
loss that diverges has lost); a setting where a method has no run, or only runs that crashed or
have not finished, is left out of the ranks, and said so. A diverged seed beside completed ones
leaves the mean of the completed ones, and the setting is flagged as having unequal seeds.

Within a setting, over seeds: two methods' runs with the same seed and noise seed trained on the
same noisy labels, so their accuracies are paired: a paired t-test (``scipy.stats.ttest_rel``)
gives the p-value and the t confidence interval of the mean difference.
"""
from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .runs import COMPLETED, FAILED_STATUSES, INCOMPLETE_STATUSES, cell_keys

ALPHA = 0.05
CONFIDENCE = 0.95
# No two-sided Wilcoxon signed-rank test reaches p < 0.05 with fewer pairs: its smallest p is 2 / 2**n.
WILCOXON_MIN_PAIRS = 6
RANK_RULE = ("a loss none of whose seeds completed in a setting ranks last there if one of them diverged; "
             "a setting where a loss has no run, or only crashed or unfinished runs, is left out of the ranks; "
             "diverged seeds beside completed ones are left out of the mean (as in the tables) and the setting "
             "is flagged")
METRIC_NAMES = {"last": "last epoch", "best": "best epoch"}
CD_PLOT = "cd_{metric}.png"  # the critical-difference diagram of a metric, written with the sweep plots
RANK_COLUMNS = ("metric", "method", "loss", "position", "avg_rank", "group", "n_settings", "wins", "ranked_last",
                "seeds", "mean_acc", "p_vs_first", "test", "statistic", "df", "p_value", "posthoc", "cd", "alpha",
                "n_methods")
PAIR_COLUMNS = ("metric", "setting", "method_a", "method_b", "n_pairs", "seeds", "mean_a", "mean_b", "diff",
                "ci_low", "ci_high", "t", "p_value", "note")


def setting_keys(frame: pd.DataFrame) -> list[str]:
    """What a setting is: a cell's keys without the loss and its hyperparameters."""
    return [k for k in cell_keys(frame) if k not in ("loss", "loss_params")]


def method_labels(cells: pd.DataFrame) -> pd.Series:
    """Each cell's method: its row label in the table of its dataset, model and epochs."""
    from .render import TABLE_KEYS, row_labels

    if cells.empty:
        return pd.Series([], dtype=object)
    return pd.concat([row_labels(group) for _, group in cells.groupby(list(TABLE_KEYS), sort=False)]
                     ).reindex(cells.index)


def setting_labels(cells: pd.DataFrame) -> pd.Series:
    """Each cell's setting in words: its column in the tables (``symmetric 0.8``), led by its dataset,
    model and epochs where the cells span several, and followed by the swept keys that differ."""
    from .render import TABLE_KEYS, column_labels, varying_keys

    if cells.empty:
        return pd.Series([], dtype=object)
    tables = cells[list(TABLE_KEYS)].drop_duplicates()
    columns = pd.concat([column_labels(group) for _, group in cells.groupby(list(TABLE_KEYS), sort=False)]
                        ).reindex(cells.index)
    keys = varying_keys(cells)
    labels = []
    for idx, column in columns.items():
        parts = [f"{cells.at[idx, 'dataset']} {cells.at[idx, 'model']} {cells.at[idx, 'epochs']}ep"] \
            if len(tables) > 1 else []
        parts += [column, *(f"{k}={cells.at[idx, k]}" for k in keys)]
        labels.append(" ".join(parts))
    return pd.Series(labels, index=cells.index, dtype=object)


def seed_interval(mean: pd.Series, std: pd.Series, n: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The t confidence interval (``CONFIDENCE``) of a mean over ``n`` seeds with sample std ``std``;
    NaN where there is one seed or none."""
    from scipy import stats

    n = np.asarray(n, dtype=float)
    ok = n >= 2
    safe = np.where(ok, n, 2.0)
    half = stats.t.ppf((1 + CONFIDENCE) / 2, safe - 1) * np.asarray(std, dtype=float) / np.sqrt(safe)
    mean = np.asarray(mean, dtype=float)
    return np.where(ok, mean - half, np.nan), np.where(ok, mean + half, np.nan)


def paper_position(paper: float, low: float, high: float) -> str | float:
    """Where the paper's number lies against our interval: inside, above or below it; ``1 seed`` when
    there is no interval; NaN when there is no paper number."""
    if not math.isfinite(paper):
        return math.nan
    if not (math.isfinite(low) and math.isfinite(high)):
        return "1 seed"
    return "above" if paper > high else "below" if paper < low else "inside"


@dataclass
class Ranking:
    """Ranks of the methods over the settings of one metric, the omnibus and post-hoc tests."""

    metric: str
    methods: pd.DataFrame  # one row per method, best average rank first (RANK_COLUMNS' per-method part)
    scores: pd.DataFrame  # settings x methods: mean accuracy, -inf where a method ranks last for diverging
    ranks: pd.DataFrame  # settings x methods: the rank within each setting
    test: str  # "Friedman" or "sign test"
    statistic: float
    df: float
    p_value: float
    posthoc: pd.DataFrame  # methods x methods: Nemenyi p-values
    cd: float  # Nemenyi critical difference of average ranks at ALPHA
    groups: list[list[str]]  # maximal runs of methods (by rank) no pair of which differs at ALPHA
    seeds: tuple[int, int]  # fewest and most completed seeds of a ranked cell

    @property
    def n_settings(self) -> int:
        return len(self.scores)

    @property
    def n_methods(self) -> int:
        return len(self.methods)


@dataclass
class Stats:
    """Everything the statistics sections and files show; ``reason`` says why ranks could not be
    computed, ``pair_reason`` why no paired test could."""

    methods: list[str]
    settings: list[str]  # every setting, in table order
    rankings: dict[str, Ranking] = field(default_factory=dict)
    reason: str = ""
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (setting, why it is not ranked)
    unequal: list[tuple[str, str]] = field(default_factory=list)  # (ranked setting, its seed counts)
    ranked_last: list[tuple[str, str]] = field(default_factory=list)  # (setting, method) ranked last
    pairs: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(PAIR_COLUMNS)))
    pair_reason: str = ""
    best: dict[tuple[str, str], str] = field(default_factory=dict)  # (metric, setting) -> its best method

    def tested_pairs(self) -> pd.DataFrame:
        return self.pairs[self.pairs["p_value"].notna()]

    def nothing(self) -> str:
        """One line saying why, when no statistic at all could be computed; else empty."""
        if self.rankings or not self.tested_pairs().empty:
            return ""
        return f"No statistics: {'; '.join(dict.fromkeys(filter(None, (self.reason, self.pair_reason))))}."

    def ranks_csv(self) -> pd.DataFrame:
        frames = [r.methods.assign(metric=metric) for metric, r in self.rankings.items()]
        if not frames:
            return pd.DataFrame(columns=list(RANK_COLUMNS))
        return pd.concat(frames, ignore_index=True)[list(RANK_COLUMNS)]


def compute_stats(runs: pd.DataFrame, cells: pd.DataFrame) -> Stats:
    """Ranks per metric over the settings of ``cells`` (the leaderboard's rows) and the paired tests
    of every two methods within each setting, from ``runs`` (``collect_runs``)."""
    if cells.empty:
        stats = Stats([], [])
        stats.reason = stats.pair_reason = "no run could be read"
        return stats
    cells = cells.assign(_method=method_labels(cells), _setting=setting_labels(cells))
    keys = cell_keys(cells)
    runs = runs.merge(cells[[*keys, "_method", "_setting"]], on=keys, how="left")
    methods = _ordered(cells, "_method", ["loss", "_method"])
    settings = _ordered(cells, "_setting", ["dataset", "model", "epochs", "noise", "variant", "rate"])
    stats = Stats(methods, settings)
    for metric in METRIC_NAMES:
        means = cells[cells["n_seeds"] > 0].sort_values(f"{metric}_mean", ascending=False, kind="stable")
        means = means.drop_duplicates("_setting")
        stats.best.update({(metric, s): m for s, m in zip(means["_setting"], means["_method"])})
    _rank(stats, runs)
    _pair(stats, runs)
    return stats


def _ordered(cells: pd.DataFrame, column: str, by: list[str]) -> list[str]:
    from .render import column_order, row_order

    if column == "_method":
        return sorted(cells[column].unique(), key=lambda m: row_order(m, m.split(" ")[0]))
    first = cells.drop_duplicates(column)
    order = sorted(zip(first["dataset"], first["model"], first["epochs"], first["noise"], first["variant"],
                       first["rate"], first[column]),
                   key=lambda r: (r[0], r[1], r[2], column_order(r[3], r[4], r[5]), r[6]))
    return [r[-1] for r in order]


def _rank(stats: Stats, runs: pd.DataFrame) -> None:
    if len(stats.methods) < 2:
        only = stats.methods[0] if stats.methods else "none"
        stats.reason = f"one loss ({only}), nothing to rank it against"
        stats.pair_reason = "paired tests compare two losses"
        return
    done = runs[runs["status"] == COMPLETED]
    by_cell = runs.groupby(["_setting", "_method"])["status"]
    statuses = by_cell.agg(lambda s: dict(s.value_counts())).to_dict()
    blocks = []
    for setting in stats.settings:
        if not any(statuses.get((setting, m), {}).get(COMPLETED) for m in stats.methods):
            stats.excluded.append((setting, "no loss completed a run"))
            continue
        missing = []
        for method in stats.methods:
            counts = statuses.get((setting, method), {})
            if counts.get(COMPLETED):
                continue
            if counts.get("diverged"):
                stats.ranked_last.append((setting, method))
            elif not counts:
                missing.append(f"{method}: no run")
            elif any(counts.get(s) for s in INCOMPLETE_STATUSES):
                missing.append(f"{method}: not finished")
            else:
                missing.append(f"{method}: failed (an error, not divergence)")
        if missing:
            stats.excluded.append((setting, "; ".join(missing)))
            stats.ranked_last = [(s, m) for s, m in stats.ranked_last if s != setting]
        else:
            blocks.append(setting)
    for setting in blocks:
        counts = {m: statuses.get((setting, m), {}) for m in stats.methods}
        seeds = {m: c.get(COMPLETED, 0) for m, c in counts.items()}
        if len(set(seeds.values())) > 1 or any(_failures(c) for c in counts.values()):
            stats.unequal.append((setting, ", ".join(f"{m} {seeds[m]}" + _failures(counts[m])
                                                     for m in stats.methods)))
    if len(blocks) < 2:
        stats.reason = (f"only one setting ({blocks[0]}) where every loss can be ranked; ranks need two or more"
                        if blocks else "no setting where every loss completed a run (or diverged), so nothing to rank")
        return
    for metric in METRIC_NAMES:
        scores = (done.assign(_acc=pd.to_numeric(done[f"test_acc_{metric}"]) * 100.0)
                  .pivot_table(index="_setting", columns="_method", values="_acc", aggfunc="mean")
                  .reindex(index=blocks, columns=stats.methods))
        seeds = done.groupby(["_setting", "_method"]).size().reindex(
            pd.MultiIndex.from_product([blocks, stats.methods])).dropna()
        stats.rankings[metric] = _ranking(metric, scores.fillna(-math.inf), (int(seeds.min()), int(seeds.max())),
                                          stats.ranked_last)


def _failures(counts: dict[str, int]) -> str:
    """A cell's runs that did not complete, e.g. `` (1 diverged, 2 incomplete)``; empty when none."""
    unfinished = sum(counts.get(s, 0) for s in INCOMPLETE_STATUSES)
    parts = [f"{counts[s]} {s}" for s in FAILED_STATUSES if counts.get(s)]
    parts += [f"{unfinished} incomplete"] if unfinished else []
    return f" ({', '.join(parts)})" if parts else ""


def _ranking(metric: str, scores: pd.DataFrame, seeds: tuple[int, int], ranked_last: list[tuple[str, str]]
             ) -> Ranking:
    import scikit_posthocs as sp
    from scipy import stats as st

    n, k = scores.shape
    ranks = pd.DataFrame(st.rankdata(-scores.to_numpy(), axis=1), index=scores.index, columns=scores.columns)
    average = ranks.mean().sort_values(kind="stable")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # every setting tied: the statistic is NaN
        if k >= 3:
            test, result = "Friedman", st.friedmanchisquare(*scores.to_numpy().T)
            statistic, df, p = float(result.statistic), float(k - 1), float(result.pvalue)
        else:  # Friedman's test of two methods is the sign test
            a, b = scores.columns
            wins = int((scores[a] > scores[b]).sum())
            decided = int((scores[a] != scores[b]).sum())
            test, statistic, df = "sign test", float(wins), float(decided)
            p = float(st.binomtest(wins, decided, 0.5).pvalue) if decided else 1.0
    posthoc = sp.posthoc_nemenyi_friedman(scores).loc[average.index, average.index]
    cd = float(st.studentized_range.ppf(1 - ALPHA, k, np.inf) / math.sqrt(2) * math.sqrt(k * (k + 1) / (6 * n)))
    groups = rank_groups(list(average.index), posthoc)
    letters = {m: "".join(chr(ord("a") + g) for g, members in enumerate(groups) if m in members)
               for m in average.index}
    best = ranks.eq(ranks.min(axis=1), axis=0)
    last = pd.Series([m for _, m in ranked_last], dtype=object).value_counts()
    finite = scores.where(np.isfinite(scores))
    seed_text = f"{seeds[0]}" if seeds[0] == seeds[1] else f"{seeds[0]}–{seeds[1]}"
    methods = pd.DataFrame({
        "method": average.index, "loss": [m.split(" ")[0] for m in average.index],
        "position": range(1, k + 1), "avg_rank": average.to_numpy(),
        "group": [letters[m] for m in average.index], "n_settings": n,
        "wins": best.sum().reindex(average.index).to_numpy(),
        "ranked_last": last.reindex(average.index).fillna(0).astype(int).to_numpy(),
        "seeds": seed_text, "mean_acc": finite.mean().reindex(average.index).to_numpy(),
        "p_vs_first": posthoc.iloc[0].to_numpy(), "test": test, "statistic": statistic, "df": df,
        "p_value": p, "posthoc": "Nemenyi", "cd": cd, "alpha": ALPHA, "n_methods": k,
    })
    return Ranking(metric, methods, scores, ranks, test, statistic, df, p, posthoc, cd, groups, seeds)


def rank_groups(ordered: list[str], pvalues: pd.DataFrame, alpha: float = ALPHA) -> list[list[str]]:
    """The groups a critical-difference diagram joins with a bar: the longest runs of methods in rank
    order no two of which differ at ``alpha``, each not inside another; single methods too."""
    runs = []
    for i in range(len(ordered)):
        j = i
        while j + 1 < len(ordered) and all(pvalues.at[ordered[a], ordered[j + 1]] >= alpha for a in range(i, j + 1)):
            j += 1
        if not runs or j > runs[-1][1]:
            runs.append((i, j))
    return [ordered[i:j + 1] for i, j in runs]


def _pair(stats: Stats, runs: pd.DataFrame) -> None:
    if len(stats.methods) < 2:
        return
    done = runs[runs["status"] == COMPLETED]
    accuracies = {metric: pd.to_numeric(done[f"test_acc_{metric}"]).to_numpy(dtype=float) * 100.0
                  for metric in METRIC_NAMES}
    # setting -> method -> (seed, noise seed) -> row in ``done``
    found: dict[str, dict[str, dict[tuple, int]]] = {}
    for row, (setting, method, seed, noise_seed) in enumerate(zip(done["_setting"], done["_method"], done["seed"],
                                                                  done["noise_seed"])):
        found.setdefault(setting, {}).setdefault(method, {})[(int(seed), str(noise_seed))] = row
    rows, tests = [], {}  # tests: number of pairs -> (row in ``rows``, x, y) of each pair to test
    for setting in stats.settings:
        present = [m for m in stats.methods if m in found.get(setting, {})]
        for a, b in itertools.combinations(present, 2):
            shared = sorted(found[setting][a].keys() & found[setting][b].keys())
            seeds = " ".join(str(seed) for seed, _ in shared)
            for metric, values in accuracies.items():
                x = values[[found[setting][a][k] for k in shared]]
                y = values[[found[setting][b][k] for k in shared]]
                row, note = _describe(x, y)
                rows.append([metric, setting, a, b, len(shared), seeds, *row, math.nan, math.nan, math.nan, math.nan,
                             note])
                if not note:
                    tests.setdefault(len(shared), []).append((len(rows) - 1, x, y))
    _t_tests(rows, tests)
    order = list(METRIC_NAMES)
    stats.pairs = pd.DataFrame(rows, columns=list(PAIR_COLUMNS)).sort_values(
        "metric", key=lambda c: c.map(order.index), kind="stable", ignore_index=True)
    if not stats.pairs["p_value"].notna().any():
        stats.pair_reason = ("no two losses share two completed seeds (same seed and noise seed) in any setting, "
                             "so no paired test" if not (stats.pairs["n_pairs"] >= 2).any() else
                             "every two losses that share seeds differ by the same amount on each (no variance), "
                             "so no t-test")


def _describe(x: np.ndarray, y: np.ndarray) -> tuple[tuple[float, float, float], str]:
    """The means of paired accuracies ``x`` and ``y`` and of their difference, and why they are not
    tested (empty when they are)."""
    if len(x) == 0:
        return (math.nan, math.nan, math.nan), "no shared seed"
    diff = x - y
    means = (float(x.mean()), float(y.mean()), float(diff.mean()))
    if len(x) < 2:
        return means, "one shared seed: no test"
    if np.ptp(diff) <= 1e-9 * max(1.0, float(np.abs(diff).max())):  # no variance: t is 0/0 or ±inf
        same = "identical in every shared seed" if not diff.any() else "the same difference in every shared seed"
        return means, f"{same}: no t-test"
    return means, ""


def _t_tests(rows: list[list], tests: dict[int, list[tuple[int, np.ndarray, np.ndarray]]]) -> None:
    """Fill in ci_low, ci_high, t and p of ``rows``: one paired t-test per pair, all pairs of one size at once."""
    from scipy import stats as st

    first = PAIR_COLUMNS.index("ci_low")
    for batch in tests.values():
        at, x, y = zip(*batch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # near-constant differences
            result = st.ttest_rel(np.stack(x), np.stack(y), axis=1)
            ci = result.confidence_interval(CONFIDENCE)
        for i, values in zip(at, zip(ci.low, ci.high, result.statistic, result.pvalue)):
            rows[i][first:first + 4] = [float(v) for v in values]


def t_critical(n: int) -> float:
    """How many standard errors a mean difference over ``n`` pairs must exceed to reach p < ALPHA."""
    from scipy import stats

    return float(stats.t.ppf(1 - ALPHA / 2, n - 1))
