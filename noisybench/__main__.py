"""``python -m noisybench [overrides]``: one run, or a sweep with ``--multirun``."""
from __future__ import annotations

import logging
import shutil
import sys
import warnings
from importlib import resources
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .config_keys import CONFIG_PACKAGE
from .registry import ConfigError

# The key a sweeper's pack job carries: the path of its pack manifest (noisybench.pack).
PACK_JOB_KEY = "pack_job"

# conf/hydra/launcher/*.yaml keep the launcher plugins' names, so Hydra validates them against
# the plugins' schemas (wanted) and warns that matching by name is deprecated. Set at import so
# that launcher worker processes, which import this module for the task function, are quiet too.
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema")


def group_options(group: str, config_dirs: list[Path] = ()) -> list[str]:
    """The choices of a config group: noisybench's own presets and those in the user's config dirs."""
    folders = [resources.files(CONFIG_PACKAGE).joinpath(group), *(Path(d) / group for d in config_dirs)]
    return sorted({p.name.rsplit(".", 1)[0] for folder in folders if folder.is_dir()
                   for p in folder.iterdir() if p.name.endswith((".yaml", ".yml"))})


def user_config_dirs(argv: list[str]) -> list[Path] | None:
    """The folders named by ``--config-dir``/``-cd``; None where ``hydra.searchpath`` adds others,
    whose choices only Hydra can list."""
    dirs = []
    for i, arg in enumerate(argv):
        if arg.lstrip("+").startswith("hydra.searchpath"):
            return None
        for flag in ("--config-dir", "-cd"):
            if arg == flag and i + 1 < len(argv):
                dirs.append(Path(argv[i + 1]))
            elif arg.startswith(flag + "="):
                dirs.append(Path(arg[len(flag) + 1:]))
    return dirs


def check_group_choices(argv: list[str]) -> None:
    """One clear line for ``loss=nope`` instead of Hydra's multi-line "Could not find" report.

    Only plain choices and comma-separated sweep lists are checked; anything else (glob(),
    range(), quoted values) is left to Hydra. A preset in the user's ``--config-dir`` is a choice too.
    """
    config_dirs = user_config_dirs(argv)
    if config_dirs is None:
        return
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key.startswith(("+", "~", "hydra", "-")) or "." in key or "(" in value:
            continue
        options = group_options(key, config_dirs)
        if not options:
            continue
        for choice in value.split(","):
            if choice not in options and choice != "null":
                raise ConfigError(f"unknown {key} '{choice}'; choose one of: {', '.join(options)}")


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_PACKAGE}", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from .lock import DirLock
    from .run import run, run_pack_job

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        # One process per cell: the same sweep started twice trains each cell once, and the second
        # process moves on to cells nobody holds.
        with DirLock(run_dir) as lock:
            if not lock.held:
                logging.getLogger("noisybench").warning(
                    "skipping %s: its lock is held by %s, which is training it", run_dir, lock.holder)
                return None
            if cfg.get(PACK_JOB_KEY):  # a pack of cells, made by the sweeper
                run_pack_job(Path(cfg[PACK_JOB_KEY]))
                return None
            return run(cfg, run_dir).get("test_acc_last")
    except ConfigError as e:
        remove_if_unused(run_dir)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # here, where Hydra's config still names the directory
        stop_interrupted()


def remove_if_unused(run_dir: Path) -> None:
    """Remove a run directory that holds only what Hydra and the lock wrote before the run started
    (a config rejected before training): an empty folder would be one more run to look at. One
    that holds any run artifact stays."""
    from .artifacts import launch_file

    if all(launch_file(entry.name) for entry in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)  # best effort: the error line matters more


def stop_interrupted() -> NoReturn:
    """Ctrl-C: one line on how to resume the run or sweep (the run has recorded itself as failed;
    its checkpoint and metrics.csv are kept), and exit status 130 as a shell gives it."""
    note = "interrupted; re-run the same command to resume"
    if HydraConfig.initialized():  # in a run or a sweep's job, or a sweep's driver
        hydra_cfg = HydraConfig.get()
        mode = "sweep" if hydra_cfg.mode == RunMode.MULTIRUN else "run"
        folder = Path(hydra_cfg.sweep.dir if mode == "sweep" else hydra_cfg.runtime.output_dir).absolute()
        # A directory named by the time (the default) is a new one for the same command: name it.
        if "${now:" in str(OmegaConf.to_container(hydra_cfg[mode], resolve=False)["dir"]):
            note = (f"interrupted; re-run the same command with hydra.{mode}.dir={folder} to resume "
                    f"(finished epochs are kept there)")
        else:
            note += f" (finished epochs are kept in {folder})"
    print(note, file=sys.stderr)
    sys.exit(130)


def expose_hydra_plugins() -> None:
    """Hydra takes sweepers and launchers only from the ``hydra_plugins`` namespace, found by
    scanning its path; noisybench's live in ``noisybench/plugins/`` (a plain folder, so an editable
    install works too), which is added to that path before Hydra scans it."""
    import hydra_plugins  # a namespace package: the launcher plugins we depend on provide it

    folder = str(Path(__file__).resolve().parent / "plugins")
    if folder not in list(hydra_plugins.__path__):
        hydra_plugins.__path__.append(folder)


def sweep_loss_fn(argv: list[str]) -> list[str]:
    """In a sweep over losses, ``loss.fn=...`` (the function of ``loss=custom``) as ``++loss.fn``:
    Hydra first composes the sweep's own config, with the default loss, which has no ``fn``; the
    sweeper then hands it to the custom cells only (``custom_loss_only``)."""
    if not {"--multirun", "-m"} & set(argv):
        return argv
    return [f"++{arg}" if arg.startswith("loss.fn=") else arg for arg in argv]


def cli() -> None:
    expose_hydra_plugins()
    sys.argv[1:] = sweep_loss_fn(sys.argv[1:])
    try:
        check_group_choices(sys.argv[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        main()
    except KeyboardInterrupt:  # outside a job: while a sweep checks its configs or waits for its jobs
        stop_interrupted()
    from hydra_plugins.noisybench_sweeper import last_sweep

    # Checked here, not in the sweeper: Hydra writes the leaderboard after the sweep returns.
    if last_sweep["failed"]:
        print(f"error: {last_sweep['failed']} of the sweep's {last_sweep['jobs']} jobs failed (logged above; the "
              f"leaderboard lists their cells); re-run the same command to retry them", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()
