"""Leaderboard tables as the papers print them: rows = losses, columns = noise type x rate.

One table per dataset, model and epoch count, for the last and for the best epoch. A cell reads
"mean ± std" over its completed seeds; the best mean of each column (at the printed precision)
is bold. The Markdown tables add, in parentheses, the paper's number for the same setting and
metric and the runs of the cell that were not averaged. Config keys swept between the runs (e.g.
``trainer.lr``) are columns beside the loss: a row is one loss setting at one value of each.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd

from noisybench.artifacts import METRICS_FILE

from .runs import fixed_rate, format_value, swept_keys, value_order

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
    "incomplete: no final summary). Every cell with its hyperparameters: leaderboard.csv."
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


def _notes(cell: Any, paper: float | None) -> list[str]:
    notes = []
    if paper is not None:
        notes.append(f"paper {paper:.{DECIMALS}f}")
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
            notes = _notes(cell, pivot.paper.get(at))
            return value + (f" ({'; '.join(notes)})" if notes else "")

        lines += [f"## {pivot.title}", "", f"Seeds per cell: {pivot.seeds}.", "",
                  "| loss | " + " | ".join([*pivot.keys, *pivot.columns]) + " |",
                  "|---" * (len(pivot.keys) + len(pivot.columns) + 1) + "|"]
        for name, row in zip(pivot.rows, _grid(pivot, text)):
            lines.append("| " + " | ".join([*map(_md_escape, name), *row]) + " |")
        if pivot.sources:
            lines += ["", "Paper numbers: " + "; ".join(pivot.sources) + "."]
        lines.append("")
    if board.problems:
        lines += [f"## Runs not averaged ({len(board.problems)})", "", "| run | status | setting | detail |",
                  "|---|---|---|---|"]
        lines += [f"| {_md_escape(p.path)} | {p.status} | {_md_escape(p.cell)} | {_md_escape(p.detail)} |"
                  for p in board.problems]
        lines.append("")
    return "\n".join(lines)


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
