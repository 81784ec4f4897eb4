"""``python -m noisybench [overrides]``: one run, or a sweep with ``--multirun``."""
from __future__ import annotations

import logging
import sys
import warnings
from importlib import resources
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .registry import ConfigError

CONFIG_PACKAGE = "noisybench.conf"
# The key a sweeper's pack job carries: the path of its pack manifest (noisybench.pack).
PACK_JOB_KEY = "pack_job"

# conf/hydra/launcher/*.yaml keep the launcher plugins' names, so Hydra validates them against
# the plugins' schemas (wanted) and warns that matching by name is deprecated. Set at import so
# that launcher worker processes, which import this module for the task function, are quiet too.
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema")


def group_options(group: str) -> list[str]:
    folder = resources.files(CONFIG_PACKAGE).joinpath(group)
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def check_group_choices(argv: list[str]) -> None:
    """One clear line for ``loss=nope`` instead of Hydra's multi-line "Could not find" report.

    Only plain choices and comma-separated sweep lists are checked; anything else (glob(),
    range(), quoted values) is left to Hydra.
    """
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key.startswith(("+", "~", "hydra", "-")) or "." in key or "(" in value:
            continue
        options = group_options(key)
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
    # One process per cell: the same sweep started twice trains each cell once, and the second
    # process moves on to cells nobody holds.
    with DirLock(run_dir) as lock:
        if not lock.held:
            logging.getLogger("noisybench").warning(
                "skipping %s: its lock is held by %s, which is training it", run_dir, lock.holder)
            return None
        try:
            if cfg.get(PACK_JOB_KEY):  # a pack of cells, made by the sweeper
                run_pack_job(Path(cfg[PACK_JOB_KEY]))
                return None
            summary = run(cfg, run_dir)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    return summary.get("test_acc_last")


def expose_hydra_plugins() -> None:
    """Hydra takes sweepers and launchers only from the ``hydra_plugins`` namespace, found by
    scanning its path; noisybench's live in ``noisybench/plugins/`` (a plain folder, so an editable
    install works too), which is added to that path before Hydra scans it."""
    import hydra_plugins  # a namespace package: the launcher plugins we depend on provide it

    folder = str(Path(__file__).resolve().parent / "plugins")
    if folder not in list(hydra_plugins.__path__):
        hydra_plugins.__path__.append(folder)


def cli() -> None:
    expose_hydra_plugins()
    try:
        check_group_choices(sys.argv[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
