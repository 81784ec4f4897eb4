"""Leaderboards over run directories: ``python -m noisybench.leaderboard DIR``.

``make_leaderboard(root)`` reads every run under ``root`` (``collect_runs``), averages the
completed seeds of each cell (``build_leaderboard``) and puts the published numbers of
``paper_results.csv`` beside them (``match_paper``); ``Leaderboard.stats`` ranks the losses over
the settings and tests them per setting over paired seeds (stats.py); ``Leaderboard.write`` writes
leaderboard.csv, leaderboard.md and leaderboard.tex, and the statistics to ranks.csv and pairs.csv.
"""
from .board import (LEADERBOARD_COLUMNS, Leaderboard, build_leaderboard, load_paper_results, make_leaderboard,
                    match_paper, write_leaderboard)
from .runs import CELL_KEYS, NoRunsError, Problem, collect_runs, find_run_dirs, read_run

__all__ = [
    "CELL_KEYS", "LEADERBOARD_COLUMNS", "Leaderboard", "NoRunsError", "Problem", "build_leaderboard",
    "collect_runs", "find_run_dirs", "load_paper_results", "make_leaderboard", "match_paper", "read_run",
    "write_leaderboard",
]
