"""Leaderboard tables as the papers print them: rows = losses, columns = noise type x rate.

One table per dataset, model and epoch count, for the last and for the best epoch. A cell reads
"mean ± std" over its completed seeds; the best mean of each column (at the printed precision)
is bold. The Markdown tables add, in parentheses, the paper's number for the same setting and
metric (and where it lies against our 95% interval over seeds) and the runs of the cell that were
not averaged. Config keys swept between the runs (e.g. ``trainer.lr``) are columns beside the loss:
a row is one loss setting at one value of each. After the tables, the statistics of stats.py:
average ranks over settings with the Friedman and Nemenyi tests, and paired tests over seeds.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd

from noisybench.artifacts import METRICS_FILE

from .runs import fixed_rate, format_value, swept_keys, value_order
from .stats import (ALPHA, CD_PLOT, CONFIDENCE, METRIC_NAMES, RANK_RULE, WILCOXON_MIN_PAIRS, Ranking, Stats,
                    paper_position, t_critical)

if TYPE_CHECKING:
    from .board import Leaderboard

BASELINE_LOSS = "ce"  # the first row of every table, as in the papers
# The papers' column order (Clean, Sym, Asym, ...); other noise types follow alphabetically.
NOISE_ORDER = ("none", "symmetric", "asymmetric", "pairflip", "instance", "random", "human")
TABLE_KEYS = ("dataset", "model", "epochs")
DECIMALS = 2

LEGEND = (
    "Test accuracy (%) over seeds: mean ± sample std (ddof=1; a single seed shows the mean alone). "
    "**Bold**: the best mean of its column. In parentheses: the published number for the same setting "
    "and metric (paper), and runs of the cell that are not averaged (failed: diverged or failed; "
    "incomplete: no final summary). After the paper's number: ∈ CI, inside the 95% t interval of our mean over "
    "seeds; > CI, above it; < CI, below it (none with one seed). Every cell with its hyperparameters and "
    "intervals: leaderboard.csv."
)
SWEPT_LEGEND = ("Columns beside the loss (e.g. trainer.lr): config settings that differ between the runs "
                "of the table; runs that differ in any setting are never averaged together.")


def _differing_keys(dicts: list[dict[str, Any]]) -> list[str]:
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    return [k for k in keys if len({format_value(d[k]) if k in d else None for d in dicts}) > 1]


def row_labels(cells: pd.DataFrame) -> pd.Series:
    """Each cell's row in a table: its loss, ``[preset]`` when it has one, and the hyperparameters
    that tell its rows apart when one loss has several settings.

    A preset's cells share one row even where the preset's values differ between columns (as a
    paper's row does); that row splits by hyperparameters only if one column (at one value of the
    swept config keys) holds two settings.
    """
    swept = swept_keys(cells)
    groups: dict[tuple[str, Any], list] = defaultdict(list)
    for idx, loss, params in zip(cells.index, cells["loss"], cells["params"]):
        groups[(loss, params.get("preset"))].append(idx)
    labels = {}
    for (loss, preset), members in groups.items():
        name = f"{loss} [{preset}]" if preset is not None else loss
        columns = [tuple(cells.at[i, k] for k in ("noise", "variant", "rate", *swept)) for i in members]
        if preset is not None and len(set(columns)) == len(columns):
            labels.update({i: name for i in members})
            continue
        settings = {cells.at[i, "loss_params"]: cells.at[i, "params"] for i in members}
        shown = [k for k in _differing_keys(list(settings.values())) if k != "preset"]
        for i in members:
            params = cells.at[i, "params"]
            parts = [f"{k}={format_value(params[k])}" for k in shown if k in params]
            labels[i] = f"{name} ({', '.join(parts)})" if parts else name
    return pd.Series(labels, dtype=object).reindex(cells.index)


def varying_keys(cells: pd.DataFrame) -> list[str]:
    """The swept config keys whose value differs between these cells (one table's, one plot's):
    the columns a table shows beside the loss."""
    return [k for k in swept_keys(cells) if cells[k].nunique() > 1]


def row_order(label: str, loss: str, swept: tuple = ()) -> tuple:
    """A row's place: the baseline loss first, then by label and the swept config values."""
    return (loss != BASELINE_LOSS, label, tuple(value_order(v) for v in swept))


def column_labels(cells: pd.DataFrame) -> pd.Series:
    """Each cell's column: noise type, its variant where the table has several (or the rate is
    fixed, as for CIFAR-N label sets) and the rate."""
    variants = cells.groupby("noise")["variant"].nunique()
    labels = []
    for noise, variant, rate in zip(cells["noise"], cells["variant"], cells["rate"]):
        parts = [noise]
        if variant and (fixed_rate(noise) or variants[noise] > 1):
            parts.append(variant)
        if not fixed_rate(noise):
            parts.append(f"{rate:g}")
        labels.append(" ".join(parts))
    return pd.Series(labels, index=cells.index, dtype=object)


def column_order(noise: str, variant: str, rate: float) -> tuple:
    rank = NOISE_ORDER.index(noise) if noise in NOISE_ORDER else len(NOISE_ORDER)
    return (rank, noise, variant, rate)


@dataclass
class Pivot:
    """One printed table: rows x columns of cells (rows of the leaderboard)."""

    title: str
    metric: str
    rows: list[tuple[str, ...]]  # the row's label, then its value of each swept key
    columns: list[str]
    keys: list[str] = field(default_factory=list)  # the swept config keys
    cells: dict[tuple[int, int], Any] = field(default_factory=dict)  # (row, column) -> leaderboard row
    paper: dict[tuple[int, int], float] = field(default_factory=dict)
    # (row, column) -> where the paper's number lies against our interval: inside, above, below, 1 seed
    paper_in_ci: dict[tuple[int, int], str] = field(default_factory=dict)
    bold: set[tuple[int, int]] = field(default_factory=set)
    sources: list[str] = field(default_factory=list)
    seeds: str = ""


def pivots(board: Leaderboard) -> list[Pivot]:
    from .board import METRICS, load_paper_results, match_paper

    papers = board.papers if board.papers is not None else load_paper_results()
    tables = []
    for (dataset, model, epochs), group in board.cells.groupby(list(TABLE_KEYS), sort=True):
        keys = varying_keys(group)
        rows = pd.Series([(label, *swept) for label, swept in
                          zip(row_labels(group), group[keys].itertuples(index=False, name=None))],
                         index=group.index, dtype=object)
        columns = column_labels(group)
        loss_of = dict(zip(rows, group["loss"]))
        row_names = sorted(loss_of, key=lambda r: row_order(r[0], loss_of[r], r[1:]))
        column_keys = sorted({(n, v, r): c for n, v, r, c in zip(group["noise"], group["variant"],
                                                                   group["rate"], columns)}.items(),
                             key=lambda kv: column_order(*kv[0]))
        column_names = list(dict.fromkeys(c for _, c in column_keys))
        counts = group.loc[group["n_seeds"] > 0, "n_seeds"]
        seeds = "none completed" if counts.empty else (
            f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}–{counts.max()}")
        for metric in METRICS:
            pivot = Pivot(f"{dataset} · {model} · {epochs} epochs · {metric} epoch", metric, row_names,
                          column_names, keys, seeds=seeds)
            paper = match_paper(group, papers, metric)
            for idx, cell in group.iterrows():
                at = (row_names.index(rows[idx]), column_names.index(columns[idx]))
                pivot.cells[at] = cell
                if not math.isnan(paper.at[idx, "paper"]):
                    pivot.paper[at] = paper.at[idx, "paper"]
                    pivot.paper_in_ci[at] = paper_position(pivot.paper[at], cell[f"{metric}_ci_low"],
                                                           cell[f"{metric}_ci_high"])
            pivot.sources = sorted({s.split(": ")[0] for s in paper["paper_source"].dropna()})
            pivot.bold = _best_per_column(pivot)
            tables.append(pivot)
    return tables


def _best_per_column(pivot: Pivot) -> set[tuple[int, int]]:
    best: dict[int, float] = {}
    for (r, c), cell in pivot.cells.items():
        mean = cell[f"{pivot.metric}_mean"]
        if cell["n_seeds"] > 0 and math.isfinite(mean):
            best[c] = max(best.get(c, -math.inf), round(mean, DECIMALS))
    return {(r, c) for (r, c), cell in pivot.cells.items()
            if c in best and cell["n_seeds"] > 0 and round(cell[f"{pivot.metric}_mean"], DECIMALS) == best[c]}


def _value(cell: Any, metric: str, pm: str) -> str:
    mean, std = cell[f"{metric}_mean"], cell[f"{metric}_std"]
    if cell["n_seeds"] == 0 or not math.isfinite(mean):
        return ""
    return f"{mean:.{DECIMALS}f}" + (f"{pm}{std:.{DECIMALS}f}" if math.isfinite(std) else "")


PAPER_MARKS = {"inside": " ∈ CI", "above": " > CI", "below": " < CI"}


def _notes(cell: Any, paper: float | None, position: str = "") -> list[str]:
    notes = []
    if paper is not None:
        notes.append(f"paper {paper:.{DECIMALS}f}{PAPER_MARKS.get(position, '')}")
    if cell["n_failed"]:
        notes.append(f"{cell['n_failed']} failed")
    if cell["n_incomplete"]:
        notes.append(f"{cell['n_incomplete']} incomplete")
    return notes


def _grid(pivot: Pivot, text: Callable[[tuple[int, int]], str]) -> list[list[str]]:
    return [[text((r, c)) for c in range(len(pivot.columns))] for r in range(len(pivot.rows))]


def counts_line(board: Leaderboard) -> str:
    counts = board.counts()
    parts = [f"{counts['completed']} completed"]
    parts += [f"{counts[k]} {label}" for k, label in (("failed", "diverged or failed"),
                                                      ("incomplete", "incomplete"), ("unreadable", "unreadable"),
                                                      ("duplicate", "duplicate")) if counts[k]]
    keys = swept_keys(board.cells)
    apart = f" (told apart also by {', '.join(keys)})" if keys else ""
    return f"{counts['runs']} runs under {board.root}: {', '.join(parts)}; {len(board.cells)} cells{apart}."


def unplotted_report(board: Leaderboard) -> str:
    """The runs left out of the sweep plots' epoch curves, one line each."""
    n = len(board.unplotted)
    return "\n".join([f"not plotted: {n} run{'s' if n > 1 else ''} with unreadable {METRICS_FILE}:",
                      *(f"  {p.path} ({p.detail})" for p in board.unplotted)])


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(board: Leaderboard) -> str:
    legend = f"{LEGEND} {SWEPT_LEGEND}" if swept_keys(board.cells) else LEGEND
    lines = ["# Leaderboard", "", counts_line(board), "", legend, ""]
    for pivot in pivots(board):
        def text(at: tuple[int, int]) -> str:
            cell = pivot.cells.get(at)
            if cell is None:
                return ""
            value = _value(cell, pivot.metric, " ± ") or "–"
            if at in pivot.bold:
                value = f"**{value}**"
            notes = _notes(cell, pivot.paper.get(at), pivot.paper_in_ci.get(at, ""))
            return value + (f" ({'; '.join(notes)})" if notes else "")

        lines += [f"## {pivot.title}", "", f"Seeds per cell: {pivot.seeds}.", "",
                  "| loss | " + " | ".join([*pivot.keys, *pivot.columns]) + " |",
                  "|---" * (len(pivot.keys) + len(pivot.columns) + 1) + "|"]
        for name, row in zip(pivot.rows, _grid(pivot, text)):
            lines.append("| " + " | ".join([*map(_md_escape, name), *row]) + " |")
        if pivot.sources:
            lines += ["", "Paper numbers: " + "; ".join(pivot.sources) + ".", "", paper_summary(pivot)]
        lines.append("")
    lines += stats_markdown(board)
    if board.problems:
        lines += [f"## Runs not averaged ({len(board.problems)})", "", "| run | status | setting | detail |",
                  "|---|---|---|---|"]
        lines += [f"| {_md_escape(p.path)} | {p.status} | {_md_escape(p.cell)} | {_md_escape(p.detail)} |"
                  for p in board.problems]
        lines.append("")
    return "\n".join(lines)


def paper_summary(pivot: Pivot) -> str:
    """How many of the table's paper numbers lie inside our 95% interval over seeds, above and below it."""
    found = list(pivot.paper_in_ci.values())
    parts = [f"{found.count('inside')} inside", f"{found.count('above')} above it (the paper higher)",
             f"{found.count('below')} below it (the paper lower)"]
    if found.count("1 seed"):
        parts.append(f"{found.count('1 seed')} with one seed (no interval)")
    return (f"Paper numbers against our {CONFIDENCE:.0%} t interval over seeds: {len(found)} cells, "
            + ", ".join(parts) + ".")


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    text = "< 0.001" if p < 0.001 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"
    return f"**{text}**" if p < ALPHA else text


def _count(counts: Any) -> str:
    low, high = int(min(counts)), int(max(counts))
    return f"{low}" if low == high else f"{low}–{high}"


def stats_markdown(board: Leaderboard) -> list[str]:
    """The statistics sections of leaderboard.md: ranks over settings, then paired tests over seeds,
    each per metric; one line when nothing can be computed."""
    stats = board.stats
    if stats.nothing():
        return ["## Statistics", "", stats.nothing(), ""]
    return [*_ranks_section(stats), *_pairs_section(stats)]


def _ranks_section(stats: Stats) -> list[str]:
    lines = ["## Ranks over settings", ""]
    if not stats.rankings:
        return [*lines, f"No ranks: {stats.reason}.", ""]
    first = next(iter(stats.rankings.values()))
    k, n = first.n_methods, first.n_settings
    lines += [f"{n} settings × {k} losses; completed seeds per cell: {_count(first.seeds)}. In each setting rank 1 "
              "has the highest mean test accuracy over its seeds; ties share their average rank. Losses that share "
              f"a letter are not shown to differ (Nemenyi, below). Failed runs: {RANK_RULE}.", ""]
    if stats.ranked_last:
        lines += ["Ranked last for diverging: " + "; ".join(f"{m} in {s}" for s, m in stats.ranked_last) + ".", ""]
    if stats.unequal:
        lines += ["Unequal or failed seeds (flagged): " + "; ".join(f"{s}: {c}" for s, c in stats.unequal) + ".", ""]
    if stats.excluded:
        lines += ["Left out of the ranks: " + "; ".join(f"{s} ({r})" for s, r in stats.excluded) + ".", ""]
    lines = [_md_escape(line) if not line.startswith("#") else line for line in lines]
    for ranking in stats.rankings.values():
        lines += _ranking_table(ranking)
    return lines


def _ranking_table(ranking: Ranking) -> list[str]:
    k, n = ranking.n_methods, ranking.n_settings
    lines = [f"### {METRIC_NAMES[ranking.metric].capitalize()}", "",
             "| # | loss | average rank | group | settings won | ranked last (diverged) | mean accuracy |",
             "|---|---|---|---|---|---|---|"]
    for row in ranking.methods.itertuples(index=False):
        mean = f"{row.mean_acc:.{DECIMALS}f}" if math.isfinite(row.mean_acc) else "–"
        lines.append(f"| {row.position} | {_md_escape(row.method)} | {row.avg_rank:.2f} | {row.group} | {row.wins} | "
                     f"{row.ranked_last} | {mean} |")
    differs = "the average ranks differ" if ranking.p_value < ALPHA else "no difference shown between the ranks"
    if ranking.test == "Friedman":
        test = (f"Friedman test (scipy.stats.friedmanchisquare): χ²({ranking.df:.0f}) = {ranking.statistic:.2f}, "
                f"p = {_p(ranking.p_value)}")
    else:
        test = (f"Sign test (Friedman's test of two losses; scipy.stats.binomtest): {ranking.methods['method'][0]} "
                f"wins {ranking.statistic:.0f} of {ranking.df:.0f} untied settings, p = {_p(ranking.p_value)}")
    pairs = k * (k - 1) // 2
    posthoc = (f"Nemenyi post-hoc test (scikit-posthocs; family-wise α = {ALPHA} over {pairs} pair{'s' * (pairs > 1)}): "
               f"two losses differ when their average ranks are more than CD = {ranking.cd:.2f} apart")
    if ranking.cd >= k - 1:
        posthoc += (f"; with {n} settings no two of {k} losses can (the largest possible gap is {k - 1}: more "
                    "settings are needed)")
    return [*lines, "", f"{test}: {differs} at α = {ALPHA}.", "",
            f"{posthoc}. Critical-difference diagram: {CD_PLOT.format(metric=ranking.metric)}.", ""]


def _pairs_section(stats: Stats) -> list[str]:
    lines = ["## Paired tests over seeds", ""]
    tested = stats.tested_pairs()["n_pairs"]
    if tested.empty:
        return [*lines, f"No paired test: {stats.pair_reason}.", ""]
    n_low = int(tested.min())
    power = (f"With n pairs the test has n − 1 degrees of freedom: with {n_low} pairs a mean difference must exceed "
             f"{t_critical(n_low):.2f} of its standard errors to be significant")
    if n_low <= 5:
        power += "; low power: a large p is no evidence that two losses are equal"
    lines += ["Runs of two losses with the same seed and noise seed trained on the same noisy labels: their "
              f"accuracies are paired. n: shared completed seeds ({_count(tested)} here). Each loss against the best "
              f"of its setting. Difference: loss − best, mean over the shared seeds with its {CONFIDENCE:.0%} t "
              f"interval; p: paired t-test (scipy.stats.ttest_rel), **bold** below {ALPHA}, not corrected for the "
              f"comparisons of a setting, and the best is picked from the same runs. {power}. No Wilcoxon signed-rank "
              f"test can reach p < {ALPHA} with fewer than {WILCOXON_MIN_PAIRS} pairs. Every pair of losses: "
              "pairs.csv.", ""]
    for metric, name in METRIC_NAMES.items():
        lines += [f"### {name.capitalize()}", "", "| setting | loss | best | n | difference [95% CI] | p |",
                  "|---|---|---|---|---|---|", *_vs_best(stats, metric), ""]
    return lines


def _vs_best(stats: Stats, metric: str) -> list[str]:
    pairs = stats.pairs[stats.pairs["metric"] == metric]
    rows = []
    for setting in stats.settings:
        best = stats.best.get((metric, setting))
        here = pairs[(pairs["setting"] == setting) & ((pairs["method_a"] == best) | (pairs["method_b"] == best))]
        for pair in here.itertuples(index=False):
            sign = -1.0 if pair.method_a == best else 1.0  # shown as loss − best
            other = pair.method_b if pair.method_a == best else pair.method_a
            low, high = sorted((sign * pair.ci_low, sign * pair.ci_high))
            diff = sign * pair.diff
            text = "–" if not math.isfinite(diff) else f"{diff:+.{DECIMALS}f}" + (
                f" [{low:+.{DECIMALS}f}, {high:+.{DECIMALS}f}]" if math.isfinite(low) else "")
            note = f" ({pair.note})" if pair.note else ""
            rows.append(f"| {_md_escape(setting)} | {_md_escape(other)} | {_md_escape(best)} | {pair.n_pairs} | "
                        f"{text} | {_p(pair.p_value)}{note} |")
    return rows


TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "·": r"$\cdot$",
               "–": "--"}


def tex_escape(text: str) -> str:
    return "".join(TEX_SPECIAL.get(ch, ch) for ch in str(text))


def latex(board: Leaderboard) -> str:
    lines = ["% noisybench leaderboard: test accuracy (%), mean $\\pm$ sample std over seeds;",
             "% bold: best mean per column. Needs \\usepackage{booktabs}.", ""]
    for pivot in pivots(board):
        def text(at: tuple[int, int]) -> str:
            cell = pivot.cells.get(at)
            value = "" if cell is None else _value(cell, pivot.metric, r" \pm ")
            if not value:
                return "--" if cell is not None else ""
            return f"$\\mathbf{{{value}}}$" if at in pivot.bold else f"${value}$"

        lines += [r"\begin{table}[ht]", r"\centering",
                  f"\\caption{{{tex_escape(pivot.title)}: test accuracy (\\%), seeds per cell: "
                  f"{tex_escape(pivot.seeds)}.}}",
                  f"\\begin{{tabular}}{{l{'l' * len(pivot.keys)}{'c' * len(pivot.columns)}}}", r"\toprule",
                  " & ".join(tex_escape(c) for c in ("Loss", *pivot.keys, *pivot.columns)) + r" \\", r"\midrule"]
        for name, row in zip(pivot.rows, _grid(pivot, text)):
            lines.append(" & ".join([*map(tex_escape, name), *row]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)
