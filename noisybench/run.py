"""One run, top to bottom: config -> dataset -> noise -> model -> loss -> trainer -> run artifacts."""
from __future__ import annotations

import functools
import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from . import __version__
from .artifacts import (FINISHED_STATUSES, NOISY_LABELS_FILE, SUMMARY_FILE, atomic_write_json,
                        read_summary)
from .data import DATASETS, check_dataset, load_dataset
from .logger import check_logger, make_logger
from .losses import build_loss
from .models import build_model
from .noise import check_noise, make_noisy_labels
from .plots import plot_run
from .registry import ConfigError
from .trainer import TrainData, check_trainer, resolve_device, seeds_for, train

log = logging.getLogger("noisybench")


# Trainer settings that change a run's numbers, recorded in summary.json.
PROTOCOL_KEYS = ("epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay", "l1", "grad_clip",
                 "schedule", "eta_min", "milestones", "gamma")


def noise_variant(cfg_noise: DictConfig, dataset: str) -> str | None:
    """The generator variant; for human noise the CIFAR-N label set actually used."""
    if cfg_noise.name == "human":
        from .noise.human import resolve_key

        return resolve_key(dataset, cfg_noise.get("key"))
    return cfg_noise.get("variant")


def data_root(cfg: DictConfig) -> Path:
    return Path(str(cfg.data.root)).expanduser()


@functools.lru_cache(maxsize=None)
def check_model(model_yaml: str, input_shape: tuple, num_classes: int) -> None:
    """Build the model once per (config, shape, classes): a sweep checks hundreds of cells."""
    build_model(OmegaConf.create(model_yaml), input_shape, num_classes)


def check_config(cfg: DictConfig) -> None:
    """Every config error, found before any data is read or any step is taken."""
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed!r} is not allowed; it must be an integer >= 0")
    check_dataset(cfg.dataset)
    meta = DATASETS.meta(cfg.dataset.name)
    check_noise(cfg.noise, cfg.dataset.name, meta["num_classes"])
    check_model(OmegaConf.to_yaml(cfg.model), tuple(meta["input_shape"]), meta["num_classes"])
    build_loss(cfg.loss, meta["num_classes"], dataset=cfg.dataset.name, noise=cfg.noise.name, rate=cfg.noise.rate)
    check_trainer(cfg.trainer)
    check_logger(cfg.logger)


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    run_dir = Path(run_dir)
    check_config(cfg)
    try:
        previous = read_summary(run_dir)
    except ValueError as e:
        log.warning("%s; running again", e)
        previous = None
    if previous is not None and previous["status"] in FINISHED_STATUSES:
        log.info("skipping %s: its %s says the run is %s", run_dir, SUMMARY_FILE, previous["status"])
        return previous

    root = data_root(cfg)
    dataset = load_dataset(cfg.dataset, root, cfg.data.download)
    noisy = make_noisy_labels(cfg.noise, dataset.train_y.numpy(), dataset.num_classes, dataset.name,
                              images=dataset.train_x, root=root, download=cfg.data.download)
    noisy.save(run_dir / NOISY_LABELS_FILE)
    log.info("%s: %d train / %d test images, %s noise at rate %s: realised rate %.4f",
             dataset.name, len(dataset.train_y), len(dataset.test_y), cfg.noise.name, cfg.noise.rate,
             noisy.realised_rate)

    init = torch.Generator().manual_seed(seeds_for(cfg.seed)["init"])
    model = build_model(cfg.model, dataset.input_shape, dataset.num_classes, generator=init)
    loss = build_loss(cfg.loss, dataset.num_classes, dataset=dataset.name, noise=cfg.noise.name,
                      rate=cfg.noise.rate)
    data = TrainData(dataset.train_x, torch.from_numpy(noisy.noisy), torch.from_numpy(noisy.clean),
                     dataset.test_x, dataset.test_y, dataset.num_classes, dataset.mean, dataset.std,
                     cfg.dataset.augment)

    summary: dict[str, Any] = {
        "status": "running",
        "dataset": dataset.name,
        "num_classes": dataset.num_classes,
        "noise": {"type": cfg.noise.name, "variant": noise_variant(cfg.noise, dataset.name),
                  "rate": cfg.noise.rate, "realised_rate": noisy.realised_rate,
                  **{k: v for k, v in OmegaConf.to_container(cfg.noise, resolve=True).items()
                     if k not in ("name", "rate", "seed", "variant")}},
        "loss": cfg.loss.name,
        "loss_params": getattr(loss, "params", {}),
        "model": cfg.model.name,
        "seed": cfg.seed,
        "noise_seed": cfg.noise.seed,
        "epochs": cfg.trainer.epochs,
        # The protocol settings that change a run's numbers (the leaderboard keeps them apart).
        "trainer": {k: OmegaConf.to_container(cfg.trainer, resolve=True)[k] for k in PROTOCOL_KEYS},
        "device": str(resolve_device(cfg.trainer.device)),
        "versions": {"noisybench": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    logger = make_logger(cfg.logger, cfg, run_dir)
    try:
        summary.update(train(cfg, model, loss, data, run_dir, logger))
    except BaseException as e:
        summary.update(status="failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        summary["wall_time_s"] = time.perf_counter() - started
        atomic_write_json(run_dir / SUMMARY_FILE, summary)
        logger.finish(summary)
    try:
        plot_run(run_dir)
    except Exception as e:  # a figure must never fail a finished run
        log.warning("no plots for %s: %s", run_dir, e)
    log.info("%s after %d epochs: last test acc %.4f, best %.4f (epoch %d); %s",
             summary["status"], summary["epochs_completed"], summary.get("test_acc_last", float("nan")),
             summary.get("test_acc_best", float("nan")), summary.get("best_epoch", 0), run_dir)
    return summary
