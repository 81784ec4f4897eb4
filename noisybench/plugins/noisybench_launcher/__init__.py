"""The launchers of ``hydra/launcher=submitit_slurm`` and ``submitit_local`` (imported as
``hydra_plugins.noisybench_launcher``: Hydra takes launchers only from that namespace):
hydra-submitit-launcher's, made safe for long sweeps on a real cluster.

- **Checked before submission.** The request is compared with what ``sinfo`` reports: the
  partition exists, its nodes have the GPUs, CPUs and memory asked for, the time limit fits the
  partition's and leaves time before SLURM's warning signal. SLURM would otherwise accept some of
  these jobs and leave them pending forever.
- **Bounded waits.** A job that leaves the queue without a result (cancelled, killed, its node
  lost) is reported as failed at most about 15 s later, whether or not SLURM accounting answers
  (submitit alone waits forever when ``sacct`` does not), and the other cells go on. The failed
  cell is listed by the leaderboard as incomplete; re-running the command runs it again (the
  sweeper launches only unfinished cells).
- **One process per cell.** A job takes its cell's lock (``noisybench.lock``) before Hydra writes
  into the cell's directory; a second sweep's job that finds the lock held skips the cell.
- **Time limits and preemption.** On SLURM's warning signal (``signal_delay_s`` before the time
  limit) or a preemption signal, submitit calls ``checkpoint``: the job is requeued and the cell
  resumes from its last epoch checkpoint, losing at most the epoch in progress. A cell that wrote
  no checkpoint during a whole allocation is not requeued (it would make no progress the next
  time either): it fails with a message naming ``hydra.launcher.timeout_min``.
"""
from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, setup_globals
from hydra.errors import CompactHydraException
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# How often the result files (cheap) and the queue (one squeue call) are looked at.
RESULT_POLL_S = 1.0
QUEUE_POLL_S = 5.0
# A job out of the queue without a result file this long after it was first seen gone has
# failed (a result written just before the job ended may take a moment to show on a shared FS).
GONE_GRACE_S = 10.0
# The wait gives up when the controller has not answered for this long.
CONTROLLER_LOST_S = 900.0
# SLURM may send the warning signal up to 60 s before it is due (sbatch --signal).
SIGNAL_EARLY_S = 60.0
COMMAND_TIMEOUT_S = 60
# sacct only names how a failed job ended; a slurmdbd that does not answer must not hold the sweep.
SACCT_TIMEOUT_S = 15


class ClusterError(CompactHydraException):
    """The cluster cannot take the sweep (no controller answers, sbatch refuses): Hydra prints the
    message alone."""


def cell_dir(config: DictConfig, job_dir_key: str = "hydra.sweep.dir") -> Path:
    """The run directory of one job's config, resolved as Hydra's ``run_job`` resolves it."""
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(config)
    try:
        return Path(str(OmegaConf.select(config, job_dir_key)),
                    str(OmegaConf.select(config, "hydra.sweep.subdir"))).absolute()
    finally:
        HydraConfig.instance().cfg = previous


def write_cell_config(config: DictConfig, cell: Path, overwrite: bool = True) -> None:
    """``.hydra/config.yaml`` and ``overrides.yaml`` of a cell, as Hydra writes them when it runs
    the cell as its own job (a cell of a pack, or a cell whose job never started)."""
    from noisybench.artifacts import atomic_write_text

    hydra_dir = cell / ".hydra"
    if not overwrite and (hydra_dir / "config.yaml").exists():
        return
    task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    hydra_dir.mkdir(parents=True, exist_ok=True)
    for name, content in (("config.yaml", OmegaConf.to_yaml(task)),
                          ("overrides.yaml", OmegaConf.to_yaml(list(config.hydra.overrides.task)))):
        atomic_write_text(hydra_dir / name, content)


def job_cells(job_dir: Path) -> list[Path]:
    """The cells a job trains: the cells of its pack (noisybench.pack), or its own directory."""
    from noisybench.pack import PACK_MANIFEST, read_pack_manifest

    manifest = job_dir / PACK_MANIFEST
    return read_pack_manifest(manifest) if manifest.exists() else [job_dir]


def _checkpoint_stamps(job_dir: Path) -> tuple:
    from noisybench.artifacts import CHECKPOINT_FILE

    return tuple(_checkpoint_stamp(cell / CHECKPOINT_FILE) for cell in job_cells(job_dir))


def failed(overrides: Sequence[str], error: BaseException) -> JobReturn:
    ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
    ret.return_value = error
    return ret


def _checkpoint_stamp(path: Path) -> tuple | None:
    # Checkpoints are replaced atomically: a new one is a new inode.
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class _CellJobs:
    """What both submitit launchers add: the cell lock, requeue with resume, failed-job returns."""

    # Set by __call__ in the job; a signal that comes before it has nothing to judge progress by.
    _cell: Path | None = None
    _started = 0.0
    _checkpoint_at_start: tuple | None = None
    _requeued = False
    _stop: BaseException | None = None

    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: dict) -> JobReturn:
        """Runs inside the job: upstream's job (one cell, or one pack of cells) under the cell's lock."""
        from noisybench.lock import DirLock

        # As in noisybench.__main__, which a job does not import: the launcher configs keep the
        # plugins' names on purpose (validated against their schemas).
        warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema")
        Singleton.set_state(singleton_state)
        setup_globals()
        cell = cell_dir(self.hydra_context.config_loader.load_sweep_config(self.config, sweep_overrides), job_dir_key)
        with DirLock(cell) as lock:
            if not lock.held:
                log.warning("skipping %s: its lock is held by %s, which is training it", cell, lock.holder)
                ret = JobReturn(overrides=list(sweep_overrides), status=JobStatus.COMPLETED)
                ret.return_value = None
                return ret
            self._cell, self._requeued, self._stop = cell, False, None
            self._started = time.monotonic()
            self._checkpoint_at_start = _checkpoint_stamps(cell)
            try:
                return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
            except SystemExit as e:
                if self._requeued:
                    self._forget_interrupted_summary()
                    raise  # submitit's exit after the requeue: the next allocation resumes the cell
                return failed(sweep_overrides, self._stop or RuntimeError(
                    f"the cell exited with status {e.code} (see its log in {cell})"))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit on SLURM's warning or preemption signal, inside the job: requeue the
        cell with the same arguments; ``run`` resumes it from its last epoch checkpoint."""
        from noisybench.registry import ConfigError

        elapsed = time.monotonic() - self._started
        timeout_min = self.params.get("timeout_min")
        delay = self.params.get("signal_delay_s") or 0
        timed_out = timeout_min is not None and elapsed >= timeout_min * 60 - delay - SIGNAL_EARLY_S
        if self._cell is None:
            self._requeued = True
            return super().checkpoint(*args, **kwargs)
        if timed_out and _checkpoint_stamps(self._cell) == self._checkpoint_at_start:
            every = self.config.trainer.get("checkpoint_every")
            self._stop = ConfigError(
                f"hydra.launcher.timeout_min={timeout_min} is too short for {self._cell.name}: SLURM's "
                f"warning signal (hydra.launcher.signal_delay_s={delay} s before the limit) came "
                f"{elapsed:.0f} s after the cell started, before it wrote any epoch checkpoint "
                f"(trainer.checkpoint_every={every}); a requeued job would make no progress either. "
                f"Raise timeout_min so that the time before the signal holds at least one epoch")
            log.error("%s", self._stop)
            raise self._stop  # raised inside the training step: the run records it and stops
        self._requeued = True
        log.warning("%s: %s after %.0f s; requeuing, the cell resumes from its last epoch checkpoint",
                    self._cell.name, "time limit near" if timed_out else "preempted", elapsed)
        return super().checkpoint(*args, **kwargs)

    def _forget_interrupted_summary(self) -> None:
        """``run`` records an interrupted run as failed; a requeued cell is not over, so that
        record goes (the leaderboard then counts the cell's epochs as incomplete)."""
        from noisybench.artifacts import SUMMARY_FILE

        for cell in job_cells(self._cell):
            path = cell / SUMMARY_FILE
            try:
                summary = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if summary.get("status") == "failed" and str(summary.get("error", "")).startswith("SystemExit"):
                path.unlink(missing_ok=True)

    # --- submitting side --------------------------------------------------------------------

    def check_request(self) -> None:
        """Reject what the cluster can never run, before anything is submitted."""

    def _executor(self):
        import submitit

        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
            **({f"{self._EXECUTOR}_max_num_timeout": self.params["max_num_timeout"]}
               if "max_num_timeout" in self.params else {}))
        shared = set(OmegaConf.structured(submitit_launcher.BaseQueueConf).keys())
        executor.update_parameters(**{k if k in shared else f"{self._EXECUTOR}_{k}": v
                                      for k, v in self.params.items() if k not in init_keys})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Upstream's launch, plus the request check before submission, a refused submission as one
        line, and the bounded wait (upstream's ends in ``job.results()``, which has no hook)."""
        import cloudpickle
        from submitit.core.utils import FailedJobError

        assert self.config is not None and len(job_overrides) > 0
        self.check_request()
        checkpoint_every = self.config.trainer.get("checkpoint_every")
        if not checkpoint_every:
            log.warning("trainer.checkpoint_every=%s: a cell requeued on its time limit or preempted "
                        "restarts from epoch 0", checkpoint_every)
        executor = self._executor()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("Submitit '%s' sweep output dir : %s", self._EXECUTOR, sweep_dir)
        params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        # Jobs unpickle this launcher; its module is importable only where noisybench's plugin
        # folder has been added to the hydra_plugins namespace, so it travels by value.
        cloudpickle.register_pickle_by_value(sys.modules[type(self).__module__])
        try:
            jobs = executor.map_array(self, *zip(*params))
        except FailedJobError as e:
            raise ClusterError(f"error: the {self._EXECUTOR} submission of {len(params)} jobs was "
                               f"refused: {str(e).strip()}") from None
        returns = self.wait(jobs, job_overrides)
        for ret, overrides in zip(returns, job_overrides):
            if ret.status == JobStatus.FAILED:
                self._record_unstarted(overrides)
        return returns

    def wait(self, jobs: list, job_overrides: Sequence[Sequence[str]]) -> list[JobReturn]:
        return [self._outcome(job, overrides) for job, overrides in zip(jobs, job_overrides)]

    def _outcome(self, job, overrides: Sequence[str]) -> JobReturn:
        try:
            return job.results()[0]
        except Exception as e:  # the job raised outside the task, or ended without a result
            log.error("job %s (%s) failed: %s", job.job_id, " ".join(filter_overrides(overrides)), e)
            return failed(overrides, e)

    def _record_unstarted(self, overrides: Sequence[str]) -> None:
        """A failed job that never got as far as its cell's directory leaves the config there,
        so that the leaderboard lists the cell as incomplete instead of not at all."""
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        write_cell_config(config, cell_dir(config), overwrite=False)


class LocalLauncher(_CellJobs, submitit_launcher.LocalLauncher):
    """``hydra/launcher=submitit_local``: each cell as a local submitit job."""


class Node(NamedTuple):
    """One node of one partition, as sinfo lists it."""

    partition: str
    default: bool
    name: str
    cpus: int
    memory_mb: int
    gpus: int
    gres: str
    time_limit_min: float | None  # None: no limit
    available: str
    state: str


def _slurm(*cmd: str, timeout: float = COMMAND_TIMEOUT_S) -> str:
    """Output of a SLURM client command; ClusterError naming the command when it fails."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ClusterError(f"error: '{cmd[0]}' not found: this machine has no SLURM client "
                           f"(Debian: slurm-client)") from None
    except subprocess.TimeoutExpired:
        raise ClusterError(f"error: '{' '.join(cmd)}' got no answer in {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise ClusterError(f"error: '{' '.join(cmd)}' failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def parse_time_limit(text: str) -> float | None:
    """SLURM's time formats (``infinite``, ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``)
    in minutes; None for no limit."""
    text = text.strip()
    if text in ("infinite", "UNLIMITED", "n/a", ""):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:
        parts += [0] * (3 - len(parts))
        hours, minutes, seconds = parts
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:
        hours, (minutes, seconds) = 0, (parts + [0])[:2]
    return (int(days or 0) * 24 + hours) * 60 + minutes + seconds / 60


def gres_gpus(gres: str) -> int:
    """GPUs in a gres string such as ``gpu:a100:4(S:0-1),shard:8`` (0 for ``(null)``)."""
    return sum(int(n) for n in re.findall(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)", gres))


def cluster_nodes() -> list[Node]:
    out = _slurm("sinfo", "-h", "-N", "-o", "%P|%N|%c|%m|%G|%l|%a|%T")
    nodes = []
    for line in out.splitlines():
        partition, name, cpus, memory, gres, limit, available, state = line.split("|")
        nodes.append(Node(partition.rstrip("*"), partition.endswith("*"), name, int(cpus.rstrip("+")),
                          int(memory.rstrip("+")), gres_gpus(gres), gres, parse_time_limit(limit),
                          available, state))
    if not nodes:
        raise ClusterError("error: sinfo lists no nodes: this SLURM cluster cannot run jobs")
    return nodes


def _count(value: Any) -> int:
    """A GPU count as sbatch takes it: ``2`` or ``a100:2``."""
    if value in (None, ""):
        return 0
    return int(str(value).rsplit(":", 1)[-1])


def requested_gpus(params: dict) -> tuple[int, str]:
    """GPUs per node the request asks for, and the setting that asks."""
    extra = {k.replace("-", "_"): v for k, v in (params.get("additional_parameters") or {}).items()}
    tasks = params.get("tasks_per_node") or 1
    for key, value, per_node in (
            ("gpus_per_node", params.get("gpus_per_node"), _count),
            ("gpus_per_task", params.get("gpus_per_task"), lambda v: _count(v) * tasks),
            ("gres", params.get("gres"), lambda v: gres_gpus(str(v))),
            ("additional_parameters.gpus_per_node", extra.get("gpus_per_node"), _count),
            ("additional_parameters.gpus", extra.get("gpus"), _count),
            ("additional_parameters.gres", extra.get("gres"), lambda v: gres_gpus(str(v)))):
        if value not in (None, "", 0):
            try:
                n = per_node(value)
            except ValueError:
                from noisybench.registry import ConfigError

                raise ConfigError(f"hydra.launcher.{key}={value!r} is not a GPU count; use an integer "
                                  f"(or type:count, e.g. a100:1)") from None
            if n:
                return n, f"hydra.launcher.{key}={value!r}"
    return 0, ""


class SlurmLauncher(_CellJobs, submitit_launcher.SlurmLauncher):
    """``hydra/launcher=submitit_slurm`` and ``slurm_gpu``: each cell as a task of a SLURM array."""

    def check_request(self) -> None:
        from noisybench.registry import ConfigError

        p = self.params
        timeout, delay = p.get("timeout_min"), p.get("signal_delay_s") or 0
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
            raise ConfigError(f"hydra.launcher.timeout_min={timeout!r} is not allowed; it must be a "
                              f"positive number of minutes")
        if timeout * 60 <= delay:
            raise ConfigError(
                f"hydra.launcher.timeout_min={timeout} is too short: SLURM sends its warning signal "
                f"hydra.launcher.signal_delay_s={delay} s before the time limit, so every cell would be "
                f"checkpointed and requeued before its first epoch; use a timeout_min above "
                f"{delay / 60:g} plus the time of an epoch, or lower signal_delay_s")
        nodes = cluster_nodes()
        partitions = sorted({n.partition for n in nodes})
        if p.get("partition"):
            wanted = [x.strip() for x in str(p["partition"]).split(",") if x.strip()]
            for name in wanted:
                if name not in partitions:
                    raise ConfigError(f"hydra.launcher.partition={p['partition']!r}: this cluster has no "
                                      f"partition {name!r}; choose one of: {', '.join(partitions)}")
        else:
            wanted = sorted({n.partition for n in nodes if n.default})
            if not wanted:
                raise ConfigError(f"hydra.launcher.partition is null and this cluster has no default "
                                  f"partition; choose one of: {', '.join(partitions)}")
        where = "partition " + ",".join(wanted)
        nodes = [n for n in nodes if n.partition in wanted]

        gpus, asked = requested_gpus(p)
        if gpus:
            most = max(n.gpus for n in nodes)
            if most < gpus:
                have = "no GPUs" if most == 0 else f"at most {most} GPU(s) per node"
                gres = ", ".join(sorted({n.gres for n in nodes}))
                raise ConfigError(f"{asked} asks for {gpus} GPU(s) per node, but the nodes of {where} "
                                  f"have {have} (gres: {gres}); use hydra.launcher.gpus_per_node=0 on "
                                  f"this cluster (cells then train on the CPU) or a partition with GPUs")
        cpus = (p.get("cpus_per_task") or 1) * (p.get("tasks_per_node") or 1)
        most = max(n.cpus for n in nodes)
        if cpus > most:
            raise ConfigError(f"hydra.launcher.cpus_per_task={p.get('cpus_per_task')!r} asks for {cpus} CPUs "
                              f"per node, but the nodes of {where} have at most {most}")
        if p.get("mem_gb"):
            most = max(n.memory_mb for n in nodes)
            if p["mem_gb"] * 1024 > most:
                raise ConfigError(f"hydra.launcher.mem_gb={p['mem_gb']!r} is more than the nodes of {where} "
                                  f"have ({most / 1024:.1f} GB at most)")
        count = len({n.name for n in nodes})
        if (p.get("nodes") or 1) > count:
            raise ConfigError(f"hydra.launcher.nodes={p['nodes']!r} is more than {where} has ({count})")
        limits = [n.time_limit_min for n in nodes]
        if None not in limits and timeout > max(limits):
            raise ConfigError(f"hydra.launcher.timeout_min={timeout} is above the time limit of {where} "
                              f"({max(limits):g} min); use at most that (cells are requeued from their "
                              f"checkpoints when they reach it)")
        down = sorted({n.partition for n in nodes if n.available != "up"})
        if down:
            log.warning("partition %s is not up: the cells will wait until it is", ",".join(down))

    def wait(self, jobs: list, job_overrides: Sequence[Sequence[str]]) -> list[JobReturn]:
        """Results as they come; a job that leaves the queue without one is a failed cell."""
        returns: list[JobReturn | None] = [None] * len(jobs)
        pending = set(range(len(jobs)))
        gone_since: dict[int, float] = {}
        next_queue_check = time.monotonic() + QUEUE_POLL_S
        answered = time.monotonic()
        while pending:
            for i in sorted(pending):
                if jobs[i].paths.result_pickle.exists():
                    returns[i] = self._outcome(jobs[i], job_overrides[i])
                    pending.discard(i)
            now = time.monotonic()
            if pending and now >= next_queue_check:
                next_queue_check = now + QUEUE_POLL_S
                queued = self._queued_job_ids()
                if queued is None:
                    if now - answered > CONTROLLER_LOST_S:
                        raise ClusterError(f"error: the SLURM controller has not answered squeue for "
                                           f"{CONTROLLER_LOST_S:.0f} s; {len(pending)} cells are unaccounted for")
                else:
                    answered = now
                    for i in sorted(pending):
                        if jobs[i].job_id in queued:
                            gone_since.pop(i, None)
                            continue
                        first = gone_since.setdefault(i, now)
                        if now - first >= GONE_GRACE_S and not jobs[i].paths.result_pickle.exists():
                            returns[i] = self._gone(jobs[i], job_overrides[i])
                            pending.discard(i)
            if pending:
                time.sleep(RESULT_POLL_S)
        return returns  # type: ignore[return-value]

    @staticmethod
    def _queued_job_ids() -> set[str] | None:
        """This user's jobs SLURM still holds (pending, running, requeued...), one id per array
        task; None when the controller does not answer."""
        try:
            out = _slurm("squeue", "--me", "-h", "-r", "-o", "%i")
        except ClusterError as e:
            log.warning("%s", e)
            return None
        return {line.strip() for line in out.splitlines() if line.strip()}

    def _gone(self, job, overrides: Sequence[str]) -> JobReturn:
        try:  # accounting names the way it ended (CANCELLED, TIMEOUT, NODE_FAIL...) where it runs
            state = _slurm("sacct", "-n", "-X", "-P", "-o", "State", "-j", job.job_id,
                           timeout=SACCT_TIMEOUT_S).strip() or "unknown"
        except ClusterError:
            state = "unknown: SLURM accounting does not answer"
        error = RuntimeError(f"SLURM job {job.job_id} ended without a result (state: {state}); "
                             f"its logs: {job.paths.stdout}, {job.paths.stderr}")
        log.error("cell %s failed: %s", " ".join(filter_overrides(overrides)), error)
        return failed(overrides, error)
