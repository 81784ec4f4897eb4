"""The sweeper of ``--multirun`` (imported as ``hydra_plugins.noisybench_sweeper``: Hydra takes
sweepers only from that namespace): Hydra's basic sweeper plus union grids and up-front checks.

A paper table is not one cartesian product: symmetric noise runs at rates 0.2..0.8 and
asymmetric noise at 0.1..0.4. ``hydra.sweeper.grid`` lists sub-grids (key -> sweep string, as in
``hydra.sweeper.params``); the jobs are the union over sub-grids of the product
``params x sub-grid x command line``, duplicates removed. The command line wins over both, so
``noise.rate=0.8`` narrows every sub-grid that sweeps the rate.

Before any job starts, every job's config is composed and checked (``run.check_config``), so a
bad value in cell 200 of a sweep fails the sweep before cell 1 trains.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


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
        jobs: list[list[str]] = []
        seen: set[tuple[str, ...]] = set()
        for sub_grid in self.grid or [{}]:
            grid_args = [f"{k}={v}" for k, v in sub_grid.items()]
            overrides = parser.parse_overrides(common + grid_args + list(arguments))
            for job in self.split_arguments(overrides, None)[0]:
                if tuple(job) not in seen:
                    seen.add(tuple(job))
                    jobs.append(job)
        return jobs

    def check_jobs(self, jobs: list[list[str]]) -> None:
        from noisybench.run import check_config

        loader = self.hydra_context.config_loader
        for job in jobs:
            check_config(loader.load_sweep_config(self.config, list(job)))

    def sweep(self, arguments: list[str]) -> Any:
        jobs = self.job_overrides(arguments)
        if self.check:
            tic = time.perf_counter()
            self.check_jobs(jobs)
            log.info("checked the configs of %d jobs in %.1f s", len(jobs), time.perf_counter() - tic)
        size = self.max_batch_size if self.max_batch_size not in (None, -1) else max(len(jobs), 1)
        self.overrides = [jobs[i:i + size] for i in range(0, len(jobs), size)]

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        returns: list[Sequence[JobReturn]] = []
        initial_job_idx = 0
        while not self.is_done():
            batch = self.get_job_batch()
            results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            initial_job_idx += len(batch)
            returns.append(results)
        # A failed cell does not stop the sweep: the others still run, the leaderboard (written
        # when the sweep ends) lists it, and re-running the command retries only the unfinished.
        for r in (r for batch in returns for r in batch if r.status.name == "FAILED"):
            log.error("a job failed: %r; its summary.json says where", r._return_value)
        return returns
