"""The leaderboard: runs grouped into cells, seeds averaged, the papers' numbers beside ours.

A cell is one setting (``CELL_KEYS``: dataset, model, noise type and variant, rate, epochs, loss
and every resolved loss hyperparameter, and each config key whose value differs between the
runs, e.g. ``trainer.lr``: see runs.py); what varies inside it is the seed. Only completed runs
are averaged: diverged and failed runs are counted in ``n_failed``, runs without a final summary
in ``n_incomplete``. Accuracies are in percent; std is the sample std (ddof=1), as APL's
collector (``statistics.stdev``) and JAL/eps-softmax (torch ``std``) report it. Each mean has its
95% t interval over the seeds (``last_ci_low`` ...); ``paper_in_ci`` says whether the paper's
number lies inside the interval of the metric it reports, above it or below it. The statistics
of stats.py (ranks over settings, paired tests over seeds) go to ranks.csv and pairs.csv.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from noisybench.artifacts import atomic_write_text

from .runs import (CELL_KEYS, COMPLETED, FAILED_STATUSES, INCOMPLETE_STATUSES, Problem, cell_keys, collect_runs,
                   fixed_rate, swept_keys, value_order)
from .stats import Stats, compute_stats, paper_position, seed_interval

PAPER_RESULTS_FILE = "paper_results.csv"
METRICS = ("last", "best")  # test accuracy at the last epoch, and at the best epoch
PAPER_COLUMNS = ("paper", "paper_std", "paper_metric", "paper_source")
STAT_COLUMNS = ("n_seeds", "n_failed", "n_incomplete", "last_mean", "last_std", "best_mean", "best_std",
                "seeds", "realised_rate")
# Our 95% t interval of each mean over its seeds, and where the paper's number lies against it.
INTERVAL_COLUMNS = ("paper_in_ci", "last_ci_low", "last_ci_high", "best_ci_low", "best_ci_high")
# The columns of every leaderboard; swept config keys (runs.py) follow CELL_KEYS where there are any.
LEADERBOARD_COLUMNS = (*CELL_KEYS, *STAT_COLUMNS, *PAPER_COLUMNS, "delta", *INTERVAL_COLUMNS)
OUTPUT_FILES = {"csv": "leaderboard.csv", "md": "leaderboard.md", "tex": "leaderboard.tex", "ranks": "ranks.csv",
                "pairs": "pairs.csv"}


def load_paper_results(path: Path | None = None) -> pd.DataFrame:
    """The published numbers (``paper_results.csv`` shipped with this package, or ``path``)."""
    if path is None:
        source = resources.files("noisybench.leaderboard").joinpath(PAPER_RESULTS_FILE)
        with resources.as_file(source) as found:
            return load_paper_results(found)
    papers = pd.read_csv(path, comment="#", dtype={"variant": str, "params": str, "model": str})
    for column in ("model", "variant", "params"):
        papers[column] = papers[column].fillna("")
    papers["rate"] = papers["rate"].astype(float).round(6)
    return papers


def _parse_value(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value.strip()


def parse_params(text: str) -> dict[str, Any]:
    """``"q=0.3, m=1e4"`` -> ``{"q": 0.3, "m": 10000.0}`` (numbers where they parse);
    ``"preset=apl|mnist_apl"`` -> ``{"preset": ("apl", "mnist_apl")}``, any one of them."""
    params = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        values = tuple(_parse_value(v) for v in value.split("|"))
        params[key.strip()] = values if len(values) > 1 else values[0]
    return params


def _same_value(ours: Any, theirs: Any) -> bool:
    if isinstance(theirs, tuple):
        return any(_same_value(ours, alternative) for alternative in theirs)
    if isinstance(theirs, float) and isinstance(ours, (int, float)) and not isinstance(ours, bool):
        return math.isclose(float(ours), theirs, rel_tol=1e-9, abs_tol=1e-12)
    return str(ours) == str(theirs)


def paper_noise(noise: str, rate: float) -> str:
    """The papers' name for a setting's noise: any noise at rate 0 is their "Clean" column."""
    return "none" if rate == 0.0 and not fixed_rate(noise) else noise


def match_paper(cells: pd.DataFrame, papers: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """For each cell, the published number for its setting (``PAPER_COLUMNS``; NaN where none).

    A paper row matches on dataset, noise (rate 0 = clean), rate and loss, and on model,
    variant and hyperparameters where the row names them. Of several matches the one naming the
    most hyperparameters wins (an ablation row over the main table), then the earlier row.
    ``metric`` keeps only rows of that metric (``last``/``best``); None takes any.
    """
    rows = papers if metric is None else papers[papers["metric"] == metric]
    rows = rows[rows["metric"].isin(METRICS)]
    index: dict[tuple, list] = {}
    for order, row in enumerate(rows.itertuples(index=False)):
        key = (row.dataset, row.noise, row.rate, row.loss)
        index.setdefault(key, []).append((order, row, parse_params(row.params)))
    found = []
    for cell in cells.itertuples(index=False):
        candidates = [
            (-len(params), order, row)
            for order, row, params in index.get((cell.dataset, paper_noise(cell.noise, cell.rate), cell.rate,
                                                 cell.loss), [])
            if row.model in ("", cell.model) and row.variant in ("", cell.variant)
            and all(k in cell.params and _same_value(cell.params[k], v) for k, v in params.items())
        ]
        if candidates:
            row = min(candidates, key=lambda c: c[:2])[2]
            found.append((row.mean, row.std, row.metric, f"{row.paper} {row.table}: {row.method}"))
        else:
            found.append((math.nan, math.nan, None, None))
    return pd.DataFrame(found, columns=list(PAPER_COLUMNS), index=cells.index)


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: counts, last/best-epoch mean and sample std (percent) over completed runs."""
    done = runs["status"].eq(COMPLETED)
    frame = runs.assign(
        _done=done,
        _failed=runs["status"].isin(FAILED_STATUSES),
        _incomplete=runs["status"].isin(INCOMPLETE_STATUSES),
        _last=pd.to_numeric(runs["test_acc_last"]).where(done) * 100.0,
        _best=pd.to_numeric(runs["test_acc_best"]).where(done) * 100.0,
        _realised=pd.to_numeric(runs["realised_rate"], errors="coerce"),
        _seed=runs["seed"].where(done),
    )
    keys = cell_keys(runs)
    cells = frame.groupby(keys).agg(
        n_seeds=("_done", "sum"), n_failed=("_failed", "sum"), n_incomplete=("_incomplete", "sum"),
        last_mean=("_last", "mean"), last_std=("_last", "std"),
        best_mean=("_best", "mean"), best_std=("_best", "std"),
        seeds=("_seed", lambda s: " ".join(str(int(v)) for v in sorted(s.dropna()))),
        realised_rate=("_realised", "mean"), params=("params", "first"),
    ).reset_index()
    swept = swept_keys(runs)
    # Swept values in numeric order: lr 0.5, 2, 10 rather than 0.5, 10, 2.
    return cells.sort_values(keys, key=lambda column: column.map(value_order) if column.name in swept else column,
                             ignore_index=True)


def leaderboard_columns(frame: pd.DataFrame) -> list[str]:
    """``LEADERBOARD_COLUMNS`` with the frame's swept config keys after CELL_KEYS."""
    return [*cell_keys(frame), *LEADERBOARD_COLUMNS[len(CELL_KEYS):]]


def build_leaderboard(runs: pd.DataFrame, papers: pd.DataFrame | None = None) -> pd.DataFrame:
    """The leaderboard table (``leaderboard_columns``, plus the loss hyperparameters as dicts in
    ``params``) from the rows of ``collect_runs``."""
    if runs.empty:
        return pd.DataFrame(columns=[*LEADERBOARD_COLUMNS, "params"])
    cells = aggregate(runs)
    paper = match_paper(cells, load_paper_results() if papers is None else papers)
    best = paper["paper_metric"] == "best"
    ours = np.where(best, cells["best_mean"], cells["last_mean"])
    cells = pd.concat([cells, paper], axis=1)
    cells["delta"] = ours - cells["paper"]
    for metric in METRICS:
        cells[f"{metric}_ci_low"], cells[f"{metric}_ci_high"] = seed_interval(
            cells[f"{metric}_mean"], cells[f"{metric}_std"], cells["n_seeds"])
    low = np.where(best, cells["best_ci_low"], cells["last_ci_low"])
    high = np.where(best, cells["best_ci_high"], cells["last_ci_high"])
    cells["paper_in_ci"] = pd.Series([paper_position(*v) for v in zip(cells["paper"], low, high)], index=cells.index,
                                     dtype=object)
    return cells[[*leaderboard_columns(runs), "params"]]


@dataclass
class Leaderboard:
    """Runs under ``root``, their cells and the runs that are not averaged."""

    root: Path
    runs: pd.DataFrame
    cells: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    papers: pd.DataFrame | None = None
    # Completed runs left out of the sweep plots' epoch curves (filled in by plots.plot_sweep).
    unplotted: list[Problem] = field(default_factory=list)

    @cached_property
    def stats(self) -> Stats:
        """Ranks over settings and paired tests over seeds (stats.py)."""
        return compute_stats(self.runs, self.cells)

    def counts(self) -> dict[str, int]:
        status = self.runs["status"]
        return {
            "runs": len(self.runs) + sum(p.status in ("unreadable", "duplicate") for p in self.problems),
            "completed": int(status.eq(COMPLETED).sum()),
            "failed": int(status.isin(FAILED_STATUSES).sum()),
            "incomplete": int(status.isin(INCOMPLETE_STATUSES).sum()),
            "unreadable": sum(p.status == "unreadable" for p in self.problems),
            "duplicate": sum(p.status == "duplicate" for p in self.problems),
        }

    def markdown(self) -> str:
        from .render import markdown

        return markdown(self)

    def latex(self) -> str:
        from .render import latex

        return latex(self)

    def stats_report(self) -> str:
        """The statistics sections of leaderboard.md, for the terminal."""
        from .render import stats_markdown

        return "\n".join(stats_markdown(self))

    def report(self) -> str:
        """The run counts, the runs that are not averaged and those not plotted, for the terminal."""
        from .render import counts_line, unplotted_report

        lines = [counts_line(self)]
        if self.problems:
            lines.append("not averaged:")
            lines += ["  " + "  ".join(filter(None, (p.path, p.status, p.cell, p.detail))) for p in self.problems]
        if self.unplotted:
            lines.append(unplotted_report(self))
        return "\n".join(lines)

    def write(self, out_dir: Path | None = None) -> dict[str, Path]:
        """leaderboard.csv, .md and .tex, ranks.csv and pairs.csv in ``out_dir`` (default: the root);
        returns their paths."""
        out = Path(out_dir if out_dir is not None else self.root)
        out.mkdir(parents=True, exist_ok=True)
        paths = {kind: out / name for kind, name in OUTPUT_FILES.items()}
        # Replaced atomically: a reader (or a second sweep writing the same leaderboard) never
        # sees a half-written file.
        texts = {"csv": self.cells[leaderboard_columns(self.cells)].to_csv(index=False),
                 "md": self.markdown(), "tex": self.latex(), "ranks": self.stats.ranks_csv().to_csv(index=False),
                 "pairs": self.stats.pairs.to_csv(index=False)}
        for kind, text in texts.items():
            atomic_write_text(paths[kind], text)
        return paths


def make_leaderboard(root: Path, papers: pd.DataFrame | None = None) -> Leaderboard:
    """Read every run under ``root`` and build its leaderboard (NoRunsError when there are none)."""
    runs, problems = collect_runs(Path(root))
    papers = load_paper_results() if papers is None else papers
    return Leaderboard(Path(root), runs, build_leaderboard(runs, papers), problems, papers)


def write_leaderboard(root: Path, out_dir: Path | None = None) -> Leaderboard:
    """``make_leaderboard(root)`` written to ``out_dir`` (default: ``root``)."""
    board = make_leaderboard(root)
    board.write(out_dir)
    return board

