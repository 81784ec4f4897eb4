"""``python -m noisybench.leaderboard DIR [--out OUT] [--no-plots] [--stats]``: the leaderboard of every run
under DIR, its statistics (ranks.csv, pairs.csv), and the same sweep plots and critical-difference
diagrams a sweep writes at its end; ``--stats`` also prints the statistics."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .board import make_leaderboard
from .runs import NoRunsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m noisybench.leaderboard",
        description="Average the seeds of every run under DIR into leaderboard.csv, .md and .tex; rank the losses "
                    "over settings and test them per setting over paired seeds (ranks.csv, pairs.csv); plot accuracy "
                    "vs noise rate, accuracy vs epoch and the critical-difference diagrams.")
    parser.add_argument("dir", type=Path, metavar="DIR", help="folder searched recursively for run directories")
    parser.add_argument("--out", type=Path, default=None, help="where to write the files (default: DIR)")
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="write the tables only")
    parser.add_argument("--stats", action="store_true",
                        help="print the ranks, Friedman and Nemenyi tests and paired tests over seeds")
    # Plots were opt-in before: scripts that still ask for them keep working.
    parser.add_argument("--plots", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        board = make_leaderboard(args.dir)
    except NoRunsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    written = list(board.write(args.out).values())
    if args.plots:
        from noisybench.plots import plot_sweep

        written += plot_sweep(board, args.out)
    print(board.report())
    if args.stats:
        print(board.stats_report())
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
