"""External metric loggers (config group ``logger``). metrics.csv is always written by the trainer;
a logger here sends the same per-epoch metrics elsewhere."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .registry import ConfigError, Registry

LOGGERS = Registry("logger")

WANDB_MODES = ("offline", "online", "disabled")


class NullLogger:
    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def finish(self, summary: dict[str, Any]) -> None:
        pass


@LOGGERS.register("none")
def none(cfg_logger: DictConfig, cfg: DictConfig, run_dir: Path) -> NullLogger:
    return NullLogger()


class WandbLogger:
    def __init__(self, run):
        self.run = run

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, summary: dict[str, Any]) -> None:
        for key in ("status", "test_acc_last", "test_acc_best", "best_epoch", "epochs_completed"):
            if key in summary:
                self.run.summary[key] = summary[key]
        # A failed or diverged run is marked so in wandb instead of showing as finished.
        self.run.finish(exit_code=0 if summary.get("status") == "completed" else 1)


def sweep_group() -> str | None:
    """Inside a multirun, the sweep's directory name (e.g. apl_mnist): one wandb group per sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).name


@LOGGERS.register("wandb")
def wandb(cfg_logger: DictConfig, cfg: DictConfig, run_dir: Path) -> WandbLogger:
    import wandb as wandb_lib

    tags = list(cfg_logger.tags or []) + [
        f"dataset:{cfg.dataset.name}",
        f"noise:{cfg.noise.name}",
        f"rate:{cfg.noise.rate}",
        f"loss:{cfg.loss.name}",
    ]
    run = wandb_lib.init(
        project=cfg_logger.project,
        entity=cfg_logger.entity,
        group=cfg_logger.group or sweep_group(),
        tags=tags,
        mode=cfg_logger.mode,
        dir=str(run_dir),
        name=run_dir.name,
        config=OmegaConf.to_container(cfg, resolve=True),
        # Each Hydra job of a multirun gets its own wandb run.
        reinit="finish_previous",
        settings=wandb_lib.Settings(silent=True),
    )
    return WandbLogger(run)


def check_logger(cfg_logger: DictConfig) -> None:
    LOGGERS.get(cfg_logger.name)
    if cfg_logger.name == "wandb" and cfg_logger.mode not in WANDB_MODES:
        raise ConfigError(
            f"logger.mode={cfg_logger.mode!r} is not allowed; choose one of {', '.join(WANDB_MODES)}"
        )


def make_logger(cfg_logger: DictConfig, cfg: DictConfig, run_dir: Path):
    os.environ.setdefault("WANDB_SILENT", "true")
    return LOGGERS.get(cfg_logger.name)(cfg_logger, cfg, run_dir)
