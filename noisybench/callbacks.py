"""Hydra callbacks: the leaderboard, its statistics and the sweep plots of a multirun, written when its jobs
are done.

Registered in conf/config.yaml under ``hydra.callbacks.leaderboard``. A failure here is logged and
never raised: the sweep's runs are already on disk, and ``python -m noisybench.leaderboard DIR``
can build the same files again.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

# How long a sweep waits for another process writing the same leaderboard.
LOCK_WAIT_S = 300.0


class LeaderboardCallback(Callback):
    """On multirun end: leaderboard.{csv,md,tex}, ranks.csv, pairs.csv and the sweep plots (the
    critical-difference diagrams among them) in ``hydra.sweep.dir``; prints the Markdown leaderboard
    with its statistics."""

    def __init__(self, plots: bool = True) -> None:
        self.plots = plots

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from noisybench.lock import LEADERBOARD_LOCK_FILE, DirLock

        sweep_dir = Path(str(config.hydra.sweep.dir))
        # The same sweep run twice at once ends twice: one writer at a time (the files are also
        # replaced atomically, but the plots are not).
        try:
            with DirLock(sweep_dir, LEADERBOARD_LOCK_FILE, wait_s=LOCK_WAIT_S) as lock:
                if not lock.held:
                    log.error("no leaderboard: %s has held %s for %.0f s; python -m noisybench.leaderboard "
                              "%s writes it", lock.holder, lock.path, LOCK_WAIT_S, sweep_dir)
                    return
                self._write(sweep_dir)
        except OSError:
            log.exception("writing the leaderboard of the sweep failed")

    def _write(self, sweep_dir: Path) -> None:
        try:
            from noisybench.leaderboard import NoRunsError, make_leaderboard

            try:
                board = make_leaderboard(sweep_dir)
            except NoRunsError as e:
                log.error("no leaderboard: %s", e)
                return
            paths = list(board.write(sweep_dir).values())
            print(board.markdown(), flush=True)
        except Exception:
            log.exception("writing the leaderboard of the sweep failed")
            return
        if self.plots:
            try:
                from noisybench.plots import plot_sweep

                paths += plot_sweep(board, sweep_dir)
            except Exception:
                log.exception("plotting the sweep failed")
            if board.unplotted:
                from noisybench.leaderboard.render import unplotted_report

                log.warning("%s", unplotted_report(board))
        log.info("leaderboard of %d runs: %s", len(board.runs), ", ".join(str(p) for p in paths))
