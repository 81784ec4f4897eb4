"""One run, top to bottom: config -> dataset -> noise -> model -> loss -> trainer -> run artifacts.

``run_pack`` does the same for many cells of a sweep at once, trained as packs (noisybench/pack.py);
``run`` is a pack of one cell.
"""
from __future__ import annotations

import functools
import logging
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from . import __version__
from .artifacts import (NOISY_LABELS_FILE, SUMMARY_FILE, atomic_write_json, fingerprint, finished_run,
                        launch_file, replace_run)
from .config_keys import check_known_keys
from .data import DATASETS, check_dataset, load_dataset
from .logger import check_logger, make_logger
from .losses import build_loss, resolve_loss
from .models import build_model
from .noise import check_noise, make_noisy_labels
from .pack import cell_footprint_bytes, check_pack_loggers, check_packable, resolve_pack_size, shared_bytes
from .plots import plot_run
from .registry import ConfigError
from .trainer import Cell, TrainData, bf16_is_fast, check_trainer, resolve_device, seeds_for, train_pack

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
    check_known_keys(cfg)
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
    """One run: its artifacts in ``run_dir``; returns its summary."""
    return run_pack([(cfg, run_dir)])[0]


def run_pack(cells: Sequence[tuple[DictConfig, Path]]) -> list[dict[str, Any]]:
    """Train the cells of a sweep (configs and run directories) together and return their
    summaries, in order. Each cell writes exactly the artifacts ``run`` writes for it alone.

    The cells must share dataset, model, trainer and data settings (``pack.pack_key``); they may
    differ in seed, noise, loss and logger. Finished cells are skipped (their summaries are
    returned) unless their config changed since they ran: those are trained again, their old files
    moved to ``<parent>/.replaced/`` (``artifacts.replace_run``). Partial cells resume from their
    checkpoints. The others train in packs of
    ``trainer.pack`` cells (``auto``: as many as the device's memory holds by a per-cell
    footprint measured on one batch), in the given order; a pack too large for the memory fails
    before anything is written, with a ConfigError that names K and the memory needed.
    """
    started = time.perf_counter()
    cells = [(cfg, Path(run_dir)) for cfg, run_dir in cells]
    for cfg, _ in cells:
        check_config(cfg)
    check_packable([cfg for cfg, _ in cells], [str(run_dir) for _, run_dir in cells])
    summaries: list[dict[str, Any] | None] = [None] * len(cells)
    todo = []
    for i, (cfg, run_dir) in enumerate(cells):
        previous, changes = finished_run(run_dir, cfg)
        if previous is not None and not changes:
            log.info("skipping %s: its %s says the run is %s", run_dir, SUMMARY_FILE, previous["status"])
            summaries[i] = previous
            continue
        if changes:  # Hydra has written this run's config and log into the folder: they stay
            replace_run(run_dir, changes, keep=launch_file)
        todo.append(i)
    if not todo:
        return summaries

    first = cells[todo[0]][0]
    root = data_root(first)
    dataset = load_dataset(first.dataset, root, first.data.download)
    size = _pack_size(first, dataset, len(todo))
    if size > 1:
        check_pack_loggers([cells[i][0].logger.name for i in todo])
    for start in range(0, len(todo), size):
        chunk = todo[start:start + size]
        for i, summary in zip(chunk, _train_cells([cells[i] for i in chunk], dataset, root, started)):
            summaries[i] = summary
        started = time.perf_counter()
    return summaries


def run_pack_job(manifest: Path) -> list[dict[str, Any]]:
    """The job a sweep makes of a pack: the cells its manifest lists, each composed from the
    ``.hydra/config.yaml`` the sweeper wrote into it and trained under its own lock; a cell whose
    lock another process holds (a second sweep training it) is left to that process."""
    from contextlib import ExitStack

    from .lock import DirLock
    from .pack import read_pack_manifest

    cells = []
    with ExitStack() as locks:
        for run_dir in read_pack_manifest(manifest):
            lock = locks.enter_context(DirLock(run_dir))
            if not lock.held:
                log.warning("skipping %s: its lock is held by %s, which is training it", run_dir, lock.holder)
                continue
            cells.append((OmegaConf.load(run_dir / ".hydra" / "config.yaml"), run_dir))
        return run_pack(cells) if cells else []


def _pack_size(cfg: DictConfig, dataset, cells: int) -> int:
    """Cells per pack for ``cells`` cells like ``cfg`` (memory checked, ``auto`` resolved)."""
    t = cfg.trainer
    device = resolve_device(t.device)

    def per_cell() -> int:
        model = build_model(cfg.model, dataset.input_shape, dataset.num_classes, generator=torch.Generator())
        use_amp = bf16_is_fast(device) if t.amp == "auto" else bool(t.amp)
        return cell_footprint_bytes(model, dataset.input_shape, len(dataset.train_y), t.batch_size, device,
                                    use_amp, channels_last=t.channels_last in ("auto", True))

    shared = shared_bytes([dataset.train_x, dataset.train_y, dataset.test_x, dataset.test_y], device)
    return resolve_pack_size(t.get("pack", 1), cells, per_cell, shared, device)


def _train_cells(cells: list[tuple[DictConfig, Path]], dataset, root: Path,
                 started: float) -> list[dict[str, Any]]:
    """Noisy labels, model, loss and logger of each cell, one pack, then each cell's summary."""
    packed: list[Cell] = []
    summaries: list[dict[str, Any]] = []
    for cfg, run_dir in cells:
        noisy = make_noisy_labels(cfg.noise, dataset.train_y.numpy(), dataset.num_classes, dataset.name,
                                  images=dataset.train_x, root=root, download=cfg.data.download)
        noisy.save(run_dir / NOISY_LABELS_FILE)
        log.info("%s: %d train / %d test images, %s noise at rate %s: realised rate %.4f",
                 dataset.name, len(dataset.train_y), len(dataset.test_y), cfg.noise.name, cfg.noise.rate,
                 noisy.realised_rate)
        init = torch.Generator().manual_seed(seeds_for(cfg.seed)["init"])
        model = build_model(cfg.model, dataset.input_shape, dataset.num_classes, generator=init)
        loss, settings = resolve_loss(cfg.loss, dataset.num_classes, dataset=dataset.name, noise=cfg.noise.name,
                                      rate=cfg.noise.rate)
        batch_size_warning = loss.batch_size_warning(cfg.trainer.batch_size)
        if batch_size_warning:
            log.warning("%s", batch_size_warning)
        summaries.append({
            "status": "running",
            "dataset": dataset.name,
            "num_classes": dataset.num_classes,
            "noise": {"type": cfg.noise.name, "variant": noise_variant(cfg.noise, dataset.name),
                      "rate": cfg.noise.rate, "realised_rate": noisy.realised_rate,
                      **{k: v for k, v in OmegaConf.to_container(cfg.noise, resolve=True).items()
                         if k not in ("name", "rate", "seed", "variant")}},
            "loss": loss.name,
            "loss_params": loss.params,
            "model": cfg.model.name,
            "seed": cfg.seed,
            "noise_seed": cfg.noise.seed,
            "epochs": cfg.trainer.epochs,
            # The protocol settings that change a run's numbers (the leaderboard keeps them apart).
            "trainer": {k: OmegaConf.to_container(cfg.trainer, resolve=True)[k] for k in PROTOCOL_KEYS},
            "device": str(resolve_device(cfg.trainer.device)),
            "versions": {"noisybench": __version__, "torch": torch.__version__, "python": platform.python_version()},
            # The run's identity: a re-run reuses this run only when its config has the same.
            "config": fingerprint(cfg),
        })
        packed.append(Cell(cfg, model, loss, torch.from_numpy(noisy.noisy), run_dir,
                           make_logger(cfg.logger, cfg, run_dir), settings=settings))
    data = TrainData(dataset.train_x, packed[0].noisy_y, dataset.train_y, dataset.test_x, dataset.test_y,
                     dataset.num_classes, dataset.mean, dataset.std, cells[0][0].dataset.augment)
    # Written once resolved, before training: a run killed on the way keeps its resolved loss
    # values and config, which the leaderboard reads from here.
    for summary, cell in zip(summaries, packed):
        atomic_write_json(cell.run_dir / SUMMARY_FILE, summary)
    try:
        for summary, result in zip(summaries, train_pack(packed, data)):
            summary.update(result)
    except torch.OutOfMemoryError as e:
        message = (f"a pack of {len(packed)} cells ran out of memory: {e}; use a smaller trainer.pack "
                   "or trainer.pack=auto" if len(packed) > 1 else str(e))
        for summary in summaries:
            summary.update(status="failed", error=f"{type(e).__name__}: {message}")
        raise torch.OutOfMemoryError(message) from e
    except BaseException as e:
        for summary in summaries:
            summary.update(status="failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        wall = time.perf_counter() - started
        for summary, cell in zip(summaries, packed):
            summary["wall_time_s"] = wall
            atomic_write_json(cell.run_dir / SUMMARY_FILE, summary)
            cell.logger.finish(summary)
    for summary, cell in zip(summaries, packed):
        try:
            plot_run(cell.run_dir)
        except Exception as e:  # a figure must never fail a finished run
            log.warning("no plots for %s: %s", cell.run_dir, e)
        log.info("%s after %d epochs: last test acc %.4f, best %.4f (epoch %d); %s",
                 summary["status"], summary["epochs_completed"], summary.get("test_acc_last", float("nan")),
                 summary.get("test_acc_best", float("nan")), summary.get("best_epoch", 0), cell.run_dir)
    return summaries
