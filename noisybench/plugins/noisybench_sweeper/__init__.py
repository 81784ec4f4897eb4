"""The sweeper of ``--multirun`` (imported as ``hydra_plugins.noisybench_sweeper``: Hydra takes
sweepers only from that namespace): Hydra's basic sweeper plus union grids and up-front checks.

A paper table is not one cartesian product: symmetric noise runs at rates 0.2..0.8 and
asymmetric noise at 0.1..0.4. ``hydra.sweeper.grid`` lists sub-grids (key -> sweep string, as in
``hydra.sweeper.params``); the jobs are the union over sub-grids of the product
``params x sub-grid x command line``, duplicates removed. The command line wins over both, and
selects sub-grids: a key it sets that sub-grids also set keeps only the sub-grids holding one of
its values (``noise=asymmetric`` runs the asymmetric sub-grid, with that sub-grid's generator and
rates; ``noise.rate=0.8`` the sub-grids that sweep 0.8, narrowed to it). When no sub-grid holds
any of them, every sub-grid takes the command line's values (``noise.rate=0.5``).

Before any job starts, every job's config is composed and checked (``run.check_config``), so a
bad value in cell 200 of a sweep fails the sweep before cell 1 trains. Cells whose summary.json
says they are finished are not launched again: re-running a sweep launches only the cells that
are missing, failed or were cut short (which on a cluster saves a job per finished cell).

A finished cell is reused only when the config it ran with (summary.json's ``config``, else its
.hydra/config.yaml) has the same fingerprint (``artifacts.fingerprint``: what can change its
numbers) as the cell's config now. Editing a value that the cells' names do not show (an
experiment's ``trainer.lr``, a loss preset) and re-running the command trains the changed cells
again: before launching, each one's old files move to ``<sweep dir>/.replaced/<cell>.<UTC time>/``
(hidden: the leaderboard does not read them; nothing is lost), with a warning naming the cell and
each changed key's old and new value. An unfinished cell whose checkpoint another config wrote is
moved aside the same way, and trained from its first epoch.

A sweep in which any cell failed exits with status 1 once its leaderboard is written
(``noisybench.__main__.cli``), so that scripts notice; re-running the command retries those cells.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from hydra.errors import CompactHydraException
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

# This process's last sweep: its jobs and how many failed, for noisybench.__main__.cli, which exits
# non-zero after Hydra has written the leaderboard (its end callback runs after ``sweep`` returns).
last_sweep = {"jobs": 0, "failed": 0}


class SweepConfigError(CompactHydraException):
    """A ConfigError of the sweep (a cell's config, the launcher's request): Hydra prints its one
    line, as the entry point prints a single run's, instead of a traceback."""


class Changed(NamedTuple):
    """A cell whose config changed since it ran: the keys, each with its (old, new) value."""

    run_dir: Path
    changes: dict[str, tuple[Any, Any]]
    finished: bool


def custom_loss_only(job: list[str]) -> list[str]:
    """``loss.fn`` names the function of ``loss=custom``: in a sweep over losses
    (``loss=ce,custom loss.fn=mylosses:poly2``) the other cells leave it out."""
    def key(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")

    choice = next((o.split("=", 1)[1] for o in job if key(o) == "loss"), None)
    if choice is None:
        return job
    if choice == "custom":  # its config has the key: a plain override (and a plain directory name)
        return [o.lstrip("+") if key(o) == "loss.fn" else o for o in job]
    return [o for o in job if key(o) != "loss.fn"]


def sweep_values(override: Any) -> set[Any]:
    """The values an override sets: one, or each of a sweep's (``0.2,0.4``, ``range(0,3)``)."""
    try:
        return set(override.sweep_iterator()) if override.is_sweep_override() else {override.value()}
    except (TypeError, ValueError):  # unhashable (a list or dict value) or not enumerable (glob)
        return set()


def select_sub_grids(sub_grids: list[dict[str, Any]], arguments: Sequence[str],
                     parser: OverridesParser) -> list[dict[str, Any]]:
    """The sub-grids that the command line's keys select (module docstring), in their order."""
    def values(key: str, sub_grid: dict[str, Any]) -> set[Any]:
        return sweep_values(parser.parse_overrides([f"{key}={sub_grid[key]}"])[0])

    kept = list(sub_grids)
    for override in parser.parse_overrides(list(arguments)):
        key = override.key_or_group
        wanted = sweep_values(override)
        holds = [key not in g or bool(wanted & values(key, g)) for g in kept]
        if any(held and key in g for held, g in zip(holds, kept)):
            kept = [g for held, g in zip(holds, kept) if held]
    return kept


class GridSweeper(BasicSweeper):
    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None,
                 grid: Sequence[dict[str, Any]] | None = None, check: bool = True):
        super().__init__(max_batch_size=max_batch_size, params=dict(params or {}))
        self.grid = [dict(g) for g in (grid or [])]
        self.check = check

    def job_overrides(self, arguments: list[str]) -> list[list[str]]:
        """Each job's override list, in sweep order."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        common = [f"{k}={v}" for k, v in self.params.items()]
        sub_grids = select_sub_grids(self.grid, arguments, parser)
        jobs: list[list[str]] = []
        seen: set[tuple[str, ...]] = set()
        for sub_grid in sub_grids or [{}]:
            grid_args = [f"{k}={v}" for k, v in sub_grid.items()]
            overrides = parser.parse_overrides(common + grid_args + list(arguments))
            for job in self.split_arguments(overrides, None)[0]:
                job = custom_loss_only(job)
                if tuple(job) not in seen:
                    seen.add(tuple(job))
                    jobs.append(job)
        return jobs

    def check_jobs(self, jobs: list[list[str]]) -> tuple[list[tuple[list[str], Any]], list[Changed]]:
        """Checks every job's config (when ``check``) and returns the jobs to launch (those whose
        cells are not finished, or changed since they ran), with their configs, and the changed cells."""
        from hydra_plugins.noisybench_launcher import cell_dir
        from noisybench.artifacts import SUMMARY_FILE, checkpoint_changes, finished_run
        from noisybench.run import check_config

        loader = self.hydra_context.config_loader
        todo, changed = [], []
        for job in jobs:
            config = loader.load_sweep_config(self.config, list(job))
            if self.check:
                check_config(config)
            cell = cell_dir(config)
            summary, changes = finished_run(cell, config)
            if summary is not None and not changes:
                log.info("skipping %s: its %s says the run is %s", cell.name, SUMMARY_FILE, summary["status"])
                continue
            changes = changes or checkpoint_changes(cell, config)
            if changes:
                changed.append(Changed(cell, changes, summary is not None))
            todo.append((job, config))
        return todo, changed

    def replace_changed(self, changed: list[Changed]) -> None:
        """Move the old files of the changed cells aside, so that they train from scratch."""
        from noisybench.artifacts import REPLACED_FOLDER, replace_run
        from noisybench.lock import CELL_LOCK_FILE, DirLock

        replaced = []
        for cell in changed:
            with DirLock(cell.run_dir, wait_s=0) as lock:
                if lock.held:
                    replace_run(cell.run_dir, cell.changes, keep=lambda name: name == CELL_LOCK_FILE)
                    replaced.append(cell)
                else:  # another sweep of this config has moved it aside and is training it
                    log.warning("leaving %s as it is: its lock is held by %s, which is training it",
                                cell.run_dir.name, lock.holder)
        if len(replaced) > 1:  # (one cell's own line says it all)
            finished = sum(cell.finished for cell in replaced)
            counts = [f"{n} {kind}" for n, kind in ((finished, "finished"), (len(replaced) - finished, "unfinished"))
                      if n]
            log.warning("%s cells changed since they ran (%s); re-training them, the old runs are in %s",
                        " and ".join(counts), ", ".join(sorted({key for cell in replaced for key in cell.changes})),
                        Path(self.config.hydra.sweep.dir).absolute() / REPLACED_FOLDER)

    def pack_jobs(self, todo: list[tuple[list[str], Any]]) -> list[list[str]]:
        """The jobs to launch: a cell per job, or with ``trainer.pack`` a pack of cells per job.

        A pack job is its first cell's overrides plus its own directory under
        ``<sweep>/.packs/`` and the path of its manifest (the cells' run directories, into each
        of which the cell's ``.hydra/config.yaml`` is written, as Hydra does for a job). Any
        launcher runs it as one job; ``noisybench.__main__`` trains its cells as packs."""
        from hydra_plugins.noisybench_launcher import cell_dir, write_cell_config
        from noisybench.__main__ import PACK_JOB_KEY
        from noisybench.pack import (PACKS_FOLDER, check_pack_loggers, group_packs, pack_job_name, pack_key,
                                     write_pack_manifest)

        settings = [config.trainer.get("pack", 1) for _, config in todo]
        if all(s == 1 for s in settings):
            return [job for job, _ in todo]
        groups = group_packs([pack_key(config) for _, config in todo], settings)
        sweep_dir = Path(self.config.hydra.sweep.dir).absolute()
        jobs = []
        for group in groups:
            first = todo[group[0]][0]
            if len(group) == 1:
                jobs.append(first)
                continue
            configs = [todo[i][1] for i in group]
            check_pack_loggers([config.logger.name for config in configs])
            cells = [cell_dir(config) for config in configs]
            for config, cell in zip(configs, cells):
                write_cell_config(config, cell)
            job_dir = sweep_dir / PACKS_FOLDER / pack_job_name(cells)
            manifest = write_pack_manifest(job_dir, cells)
            jobs.append([*first, f"hydra.sweep.subdir='{PACKS_FOLDER}/{job_dir.name}'",
                         f"+{PACK_JOB_KEY}='{manifest}'"])
        return jobs

    def sweep(self, arguments: list[str]) -> Any:
        from noisybench.registry import ConfigError

        try:
            return self._sweep(arguments)
        except ConfigError as e:
            raise SweepConfigError(f"error: {e}") from None

    def _sweep(self, arguments: list[str]) -> Any:
        # Resolved first: the jobs' configs copy its cache (the same ${now:...} for all).
        sweep_dir = Path(self.config.hydra.sweep.dir)
        all_jobs = self.job_overrides(arguments)
        tic = time.perf_counter()
        todo, changed = self.check_jobs(all_jobs)
        self.replace_changed(changed)
        jobs = self.pack_jobs(todo)
        log.info("%s %d cells in %.1f s; %d of them to train, as %d jobs", "checked the configs of" if self.check
                 else "looked at", len(all_jobs), time.perf_counter() - tic, len(todo), len(jobs))
        size = self.max_batch_size if self.max_batch_size not in (None, -1) else max(len(jobs), 1)
        self.overrides = [jobs[i:i + size] for i in range(0, len(jobs), size)]

        from noisybench.artifacts import atomic_write_text

        # Replaced atomically: the same sweep may be started twice at once.
        atomic_write_text(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(self.config))

        returns: list[Sequence[JobReturn]] = []
        initial_job_idx = 0
        while not self.is_done():
            batch = self.get_job_batch()
            results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            initial_job_idx += len(batch)
            returns.append(results)
        # A failed cell does not stop the sweep: the others still run, the leaderboard (written
        # when the sweep ends) lists it, and re-running the command retries only the unfinished.
        failed = [r for batch in returns for r in batch if r.status.name == "FAILED"]
        for r in failed:
            log.error("a cell failed (%s): %s", " ".join(r.overrides or []), r._return_value)
        last_sweep.update(jobs=len(jobs), failed=len(failed))
        return returns
