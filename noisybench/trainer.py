"""The training loop (config group ``trainer``), readable top to bottom.

The whole uint8 dataset lives on the training device. Each epoch draws a seeded permutation,
builds batches by indexing, augments them with batched tensor operations and takes steps of a
``torch.optim`` optimiser (``trainer.optimizer``: SGD or Adam): forward, loss, backward, clip,
step, and once per epoch the schedule. Metrics are accumulated on the device and read once per
epoch, then the test set is evaluated in large batches. Every epoch appends one row to
metrics.csv; every ``checkpoint_every`` epochs a checkpoint makes the run resumable to the same
numbers.

The loop trains a pack of cells (``train_pack``): their models computed at once by one
``StackedModel`` (noisybench/models/stacked.py) on their own parameters, which each cell's own
optimiser steps. A single run is a pack of one cell, through the same code. Each cell keeps its
own noisy labels, data order, augmentation draws, optimiser and schedule, loss, metrics and
checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from .artifacts import (CHECKPOINT_FILE, METRICS_FILE, MetricsCSV, atomic_torch_save, config_changes,
                        describe_changes, diff_keys, fingerprint, utc_stamp)
from .data.augment import build_augment, normalize
from .losses.base import Loss, TrainingSettings
from .models.stacked import StackedModel
from .registry import ConfigError

log = logging.getLogger("noisybench")

SCHEDULES = ("cosine", "multistep", "constant")
OPTIMIZERS = ("sgd", "adam")
AUTO_FLAGS = ("auto", True, False)
# How often (in steps) the loop reads the running loss back to stop a diverged run early.
DIVERGENCE_CHECK_STEPS = 50


@dataclass
class TrainData:
    """Everything the loop needs from the dataset and the noise injector, as tensors."""

    train_x: torch.Tensor  # uint8 [N, C, H, W]
    noisy_y: torch.Tensor  # int64 [N], the labels the model is trained on
    clean_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str

    def to(self, device: torch.device) -> "TrainData":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return TrainData(move(self.train_x), move(self.noisy_y), move(self.clean_y),
                         move(self.test_x), move(self.test_y), self.num_classes,
                         self.mean, self.std, self.augment)


@dataclass
class Cell:
    """One run of a pack: its config, its freshly built (or resumable) model and loss, the noisy
    labels it trains on, and where its artifacts go."""

    cfg: DictConfig
    model: torch.nn.Module
    loss_fn: torch.nn.Module
    noisy_y: torch.Tensor  # int64 [N]
    run_dir: Path
    logger: Any
    on_epoch: Callable[[dict], None] | None = None
    # Called after every optimiser step with the step's figures (scripts/check_official_training.py
    # compares them with a paper's own code); it reads tensors back, so it slows the loop.
    on_step: Callable[[dict], None] | None = None
    # What the loss's papers train it with: weight decay, L1 term, CE warm-up and a fixed lr.
    settings: TrainingSettings = TrainingSettings()


def metric_columns(num_classes: int) -> list[str]:
    return (
        ["epoch", "lr", "train_loss", "train_acc_noisy", "train_acc_clean",
         "memorised", "corrected", "test_loss", "test_acc"]
        + [f"test_acc_class_{k}" for k in range(num_classes)]
        + ["epoch_time_s"]
    )


def check_trainer(t: DictConfig) -> None:
    """Reject bad protocol values before anything is loaded."""
    def positive_int(key):
        v = t[key]
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(f"trainer.{key}={v!r} is not allowed; it must be a positive integer")

    def non_negative(key):
        v = t[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ConfigError(f"trainer.{key}={v!r} is not allowed; it must be a number >= 0")

    for key in ("epochs", "batch_size", "eval_batch_size"):
        positive_int(key)
    for key in ("weight_decay", "l1", "eta_min", "momentum"):
        non_negative(key)
    if not (isinstance(t.lr, (int, float)) and t.lr > 0):
        raise ConfigError(f"trainer.lr={t.lr!r} is not allowed; it must be a number > 0")
    if t.momentum >= 1:
        raise ConfigError(f"trainer.momentum={t.momentum!r} is not allowed; it must be in [0, 1)")
    if t.grad_clip is not None and not (isinstance(t.grad_clip, (int, float)) and t.grad_clip > 0):
        raise ConfigError(f"trainer.grad_clip={t.grad_clip!r} is not allowed; use a number > 0 or null")
    if t.optimizer not in OPTIMIZERS:
        raise ConfigError(f"trainer.optimizer={t.optimizer!r} is not allowed; choose one of {', '.join(OPTIMIZERS)}")
    betas = list(t.betas) if OmegaConf.is_list(t.betas) or isinstance(t.betas, (list, tuple)) else None
    if betas is None or len(betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                                   and 0 <= b < 1 for b in betas):
        raise ConfigError(f"trainer.betas={t.betas!r} is not allowed; it must be two numbers in [0, 1)")
    if isinstance(t.adam_eps, bool) or not isinstance(t.adam_eps, (int, float)) or not t.adam_eps > 0:
        raise ConfigError(f"trainer.adam_eps={t.adam_eps!r} is not allowed; it must be a number > 0")
    if t.schedule not in SCHEDULES:
        raise ConfigError(f"trainer.schedule={t.schedule!r} is not allowed; choose one of {', '.join(SCHEDULES)}")
    milestones = list(t.milestones)
    if any(isinstance(m, bool) or not isinstance(m, int) or m <= 0 for m in milestones) or milestones != sorted(milestones):
        raise ConfigError(f"trainer.milestones={milestones} is not allowed; it must be increasing positive epochs")
    if not (isinstance(t.gamma, (int, float)) and 0 < t.gamma <= 1):
        raise ConfigError(f"trainer.gamma={t.gamma!r} is not allowed; it must be a number in (0, 1]")
    for key in ("amp", "channels_last", "compile", "nesterov", "progress"):
        allowed = AUTO_FLAGS if key in ("amp", "channels_last") else (True, False)
        if t[key] not in allowed or (t[key] != "auto" and not isinstance(t[key], bool)):
            raise ConfigError(f"trainer.{key}={t[key]!r} is not allowed; choose one of "
                              f"{', '.join(map(str, allowed))}")
    if t.nesterov and t.momentum == 0:
        raise ConfigError("trainer.nesterov=true needs trainer.momentum > 0")
    if isinstance(t.checkpoint_every, bool) or not isinstance(t.checkpoint_every, int) or t.checkpoint_every < 0:
        raise ConfigError(f"trainer.checkpoint_every={t.checkpoint_every!r} is not allowed; use an integer >= 0")
    if t.num_threads is not None and (not isinstance(t.num_threads, int) or t.num_threads <= 0):
        raise ConfigError(f"trainer.num_threads={t.num_threads!r} is not allowed; use a positive integer or null")
    pack = t.get("pack", 1)
    if pack != "auto" and (isinstance(pack, bool) or not isinstance(pack, int) or pack < 1):
        raise ConfigError(f"trainer.pack={pack!r} is not allowed; use a positive integer (cells trained "
                          "at once as one stacked model) or auto (as many as fit in the device's memory)")
    device = resolve_device(t.device)
    if t.compile and device.type == "cpu" and cxx_compiler() is None:
        raise ConfigError("trainer.compile=true needs a C++ compiler on the CPU (torch.compile's inductor "
                          "looks for $CXX, then g++) and none was found; install one or use trainer.compile=false")


def cxx_compiler() -> str | None:
    """The C++ compiler that torch.compile's CPU backend (inductor) builds its kernels with: $CXX,
    else g++ (the order of its ``config.cpp.cxx``); None where there is none."""
    for name in (os.environ.get("CXX"), "g++"):
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"trainer.device={name!r} is not allowed; use auto, cpu or cuda[:index]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name!r} is not available on this machine (no CUDA device); use auto or cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"trainer.device={name!r} is not allowed; use auto, cpu or cuda[:index]")
    return device


def l1_norm(model: torch.nn.Module) -> torch.Tensor:
    """sum |theta| over all parameters, BatchNorm and biases included (ANL's and JAL's L1)."""
    return sum(p.abs().sum() for p in model.parameters())


def seeds_for(seed: int) -> dict[str, int]:
    """Independent streams from one training seed: model init, data order, augmentation."""
    init, order, aug = np.random.SeedSequence(seed).generate_state(3)
    return {"init": int(init), "order": int(order), "augment": int(aug)}


class EpochStats:
    """Running sums of one epoch for each of K cells, kept on the device so the loop never waits
    on the host."""

    def __init__(self, device: torch.device, cells: int = 1):
        z = lambda: torch.zeros(cells, device=device, dtype=torch.float64)  # noqa: E731
        self.loss, self.n, self.noisy_ok, self.clean_ok = z(), 0, z(), z()
        self.flipped, self.memorised, self.corrected = z(), z(), z()

    def add(self, loss, logits, noisy, clean) -> None:
        """``loss`` [K], ``logits`` [K, B, classes], labels [K, B]; one cell's scalar loss,
        [B, classes] logits and [B] labels also do."""
        if logits.dim() == 2:
            loss, logits, noisy, clean = loss.reshape(1), logits[None], noisy[None], clean[None]
        pred = logits.detach().argmax(2)
        flipped = noisy != clean
        self.loss += loss.detach().double() * noisy.shape[1]
        self.n += noisy.shape[1]
        self.noisy_ok += (pred == noisy).sum(1)
        self.clean_ok += (pred == clean).sum(1)
        self.flipped += flipped.sum(1)
        self.memorised += (flipped & (pred == noisy)).sum(1)
        self.corrected += (flipped & (pred == clean)).sum(1)

    def finite(self) -> list[bool]:
        return torch.isfinite(self.loss).tolist()

    def keep(self, cells: Sequence[int]) -> None:
        """Keep the sums of the listed cells only (the others left the pack)."""
        index = torch.tensor(list(cells), dtype=torch.long, device=self.loss.device)
        for name in ("loss", "noisy_ok", "clean_ok", "flipped", "memorised", "corrected"):
            setattr(self, name, getattr(self, name)[index])

    def result(self, cell: int = 0) -> dict[str, float]:
        n, f = self.n, max(float(self.flipped[cell]), 1.0)
        return {
            "train_loss": float(self.loss[cell]) / n,
            "train_acc_noisy": float(self.noisy_ok[cell]) / n,
            "train_acc_clean": float(self.clean_ok[cell]) / n,
            # Shares of the flipped samples predicted as their noisy / their true label (0 when none).
            "memorised": float(self.memorised[cell]) / f,
            "corrected": float(self.corrected[cell]) / f,
        }


@torch.no_grad()
def bf16_is_fast(device: torch.device) -> bool:
    """bf16 autocast pays on CUDA and on CPUs with native bf16 (AVX512-BF16 or AMX), where
    scripts/bench_trainer.py measures it about 1.7x faster than fp32 for cnn4; elsewhere
    oneDNN emulates bf16 and fp32 is faster."""
    if device.type == "cuda":
        return True
    try:
        return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def evaluate(model, x_u8, y, mean, std, num_classes, batch_size, autocast, channels_last):
    """Test loss (CE, as every paper's evaluator computes it), accuracy and per-class accuracy."""
    return evaluate_pack(StackedModel([model], channels_last), x_u8, y, mean, std, num_classes, batch_size, autocast,
                         cells=1)[0]


@torch.no_grad()
def evaluate_pack(model, x_u8, y, mean, std, num_classes, batch_size, autocast, cells: int) -> list[dict[str, Any]]:
    """``evaluate`` for each cell of a pack (``model`` maps [K, B, C, H, W] to [K, B, classes]):
    every cell sees the same test images; ``batch_size`` images per pass."""
    model.eval()
    device = x_u8.device
    loss_sum = torch.zeros(cells, device=device, dtype=torch.float64)
    correct = torch.zeros(cells * num_classes, device=device, dtype=torch.float64)
    class_offset = (torch.arange(cells, device=device) * num_classes)[:, None]
    for start in range(0, len(y), batch_size):
        x = normalize(x_u8[start:start + batch_size], mean, std)
        target = y[start:start + batch_size]
        with autocast():
            logits = model(x.unsqueeze(0).expand(cells, -1, -1, -1, -1))
        logits = logits.float()
        for k in range(cells):
            loss_sum[k] += F.cross_entropy(logits[k], target, reduction="sum").double()
        hit = logits.argmax(2) == target
        correct += torch.bincount((class_offset + target)[hit], minlength=cells * num_classes).double()
    model.train()
    correct = correct.view(cells, num_classes)
    per_class = (correct / torch.bincount(y, minlength=num_classes).clamp(min=1).double()).cpu().numpy()
    return [{"test_loss": float(loss_sum[k]) / len(y), "test_acc": float(correct[k].sum()) / len(y),
             "per_class": per_class[k]} for k in range(cells)]


def make_optimizer(model, t: DictConfig, weight_decay: float) -> torch.optim.Optimizer:
    if t.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=t.lr, betas=tuple(t.betas), eps=t.adam_eps,
                                weight_decay=weight_decay)
    return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum,
                           nesterov=bool(t.nesterov), weight_decay=weight_decay)


def make_scheduler(optimizer, t: DictConfig):
    if t.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t.epochs, eta_min=t.eta_min)
    if t.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(t.milestones), gamma=t.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


@dataclass
class EpochPlan:
    """One epoch of a pack, cell by cell (index k is the pack's cell k): lr, data order [K, N],
    noisy labels [K, N] and running sums."""

    lrs: list[float]
    perms: torch.Tensor
    noisy: torch.Tensor
    stats: EpochStats

    def keep(self, cells: list[int]) -> None:
        """Keep the listed cells only (the others left the pack)."""
        self.lrs = [self.lrs[k] for k in cells]
        self.perms, self.noisy = self.perms[cells], self.noisy[cells]
        self.stats.keep(cells)


class CellRun:
    """One cell's side of the loop: its model, optimiser and schedule (torch's own objects, which a
    pack computes and steps as they are, so its checkpoint is a single run's), generators, metrics
    file, progress and result."""

    def __init__(self, index: int, cell: Cell, t: DictConfig, device: torch.device, channels_last: bool,
                 num_classes: int):
        self.index, self.cell, self.cfg, self.loss_fn = index, cell, cell.cfg, cell.loss_fn
        self.loss_key = shared_loss_key(cell.loss_fn, cell.settings)
        self.name = Path(cell.run_dir).name
        self.model = cell.model.to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.settings = cell.settings
        own_wd = self.settings.weight_decay
        self.optimizer = make_optimizer(self.model, t, t.weight_decay if own_wd is None else own_wd)
        self.l1 = float(t.l1) + self.settings.l1
        self.scheduler = make_scheduler(self.optimizer, t)
        seeds = seeds_for(cell.cfg.seed)
        self.order_gen = torch.Generator().manual_seed(seeds["order"])
        self.aug_gen = torch.Generator(device=device).manual_seed(seeds["augment"])
        if t.compile and isinstance(cell.loss_fn, Loss):
            cell.loss_fn.compile()
        self.noisy_y = cell.noisy_y.to(device)
        self.metrics = MetricsCSV(Path(cell.run_dir) / METRICS_FILE, metric_columns(num_classes))
        self.ckpt_path = Path(cell.run_dir) / CHECKPOINT_FILE
        self.state = {"epoch": 0, "best_acc": -1.0, "best_epoch": 0, "best_per_class": None, "train_time_s": 0.0}
        self.result: dict[str, Any] = {"status": "completed", "epochs_completed": 0}
        self.last_row: dict[str, Any] | None = None
        self.stage_lr: float | None = None

    def resume(self, device: torch.device) -> None:
        """Load the cell's checkpoint, if it has one that its config may resume from."""
        if not self.ckpt_path.exists():
            return
        try:
            ckpt = torch.load(self.ckpt_path, map_location=device, weights_only=False)
            recorded = ckpt["fingerprint"]
        except Exception as e:  # truncated, overwritten, not a checkpoint: each raises its own error type
            self.start_over(e)
            return
        changed = config_changes(recorded, self.cfg)
        if changed:
            raise ConfigError(
                f"{self.ckpt_path} was written by a run with a different config ({describe_changes(changed)}); "
                f"use a new run directory or restore those values")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.order_gen.set_state(ckpt["order_gen"])
        self.aug_gen.set_state(ckpt["aug_gen"].to(self.aug_gen.get_state().device))
        # The loop draws nothing from the global generator; it is restored as a single run does.
        torch.set_rng_state(ckpt["torch_rng"])
        self.state = ckpt["state"]
        log.info("resuming from %s at epoch %d", self.ckpt_path, self.state["epoch"])

    def start_over(self, error: Exception) -> None:
        """The checkpoint cannot be read: it and the metrics.csv of its epochs are moved aside (kept,
        for a look at what went wrong), and the cell trains from epoch 0."""
        stamp = utc_stamp()
        for path in (self.ckpt_path, self.metrics.path):
            if path.exists():
                path.rename(path.with_name(f"{path.name}.corrupt-{stamp}"))
        reason = (str(error).strip().splitlines() or [""])[0]
        log.warning("%s cannot be read (%s: %s); it and %s were moved aside as *.corrupt-%s and the cell "
                    "starts over from epoch 0", self.ckpt_path, type(error).__name__, reason, METRICS_FILE, stamp)

    def begin_epoch(self) -> float:
        """Enter this epoch's stage (L_DMI's CE warm-up, then its fixed lr); return the epoch's lr."""
        epoch = self.state["epoch"]
        self.stage_lr = self.settings.fixed_lr(epoch)
        if self.stage_lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.stage_lr
        return self.optimizer.param_groups[0]["lr"]

    def clip_and_step(self, grad_clip: float | None, step: int, loss: torch.Tensor, indices: torch.Tensor) -> None:
        """Clip this cell's gradient (``clip_grad_norm_``) and step its optimiser; report the step
        to ``on_step`` where the cell has one (it reads tensors back, so only there)."""
        params = list(self.model.parameters())
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip) if grad_clip else None
        report = None
        if self.cell.on_step is not None:
            clipped = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            report = {"epoch": self.state["epoch"] + 1, "step": step + 1, "indices": indices.cpu(),
                      "loss": float(loss.detach()), "grad_norm": float(clipped if norm is None else norm),
                      "clipped_grad_norm": float(clipped)}
        self.optimizer.step()
        if report is not None:
            self.cell.on_step(report)

    def diverge(self, prefix: str) -> None:
        epoch = self.state["epoch"]
        log.warning("%sepoch %d: the training loss is not finite; stopping the run as diverged", prefix, epoch + 1)
        self.result.update(status="diverged", diverged_epoch=epoch + 1)

    def end_epoch(self, row: dict[str, Any], per_class, t: DictConfig, prefix: str) -> None:
        epoch = row["epoch"]
        self.metrics.append(row)
        self.last_row = row
        self.state["epoch"] = epoch
        self.state["train_time_s"] += row["epoch_time_s"]
        if row["test_acc"] > self.state["best_acc"]:
            self.state.update(best_acc=row["test_acc"], best_epoch=epoch, best_per_class=per_class.tolist())
        log.info("%sepoch %d/%d lr %.5f train_loss %.4f train_acc(noisy) %.4f test_loss %.4f test_acc %.4f "
                 "memorised %.3f (%.1fs)", prefix, epoch, t.epochs, row["lr"], row["train_loss"],
                 row["train_acc_noisy"], row["test_loss"], row["test_acc"], row["memorised"], row["epoch_time_s"])
        self.cell.logger.log({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
        if self.cell.on_epoch is not None:
            self.cell.on_epoch(row)

    def checkpoint_due(self, t: DictConfig) -> bool:
        epoch = self.state["epoch"]
        return bool(t.checkpoint_every) and (epoch % t.checkpoint_every == 0 or epoch == t.epochs)

    def save_checkpoint(self) -> None:
        """Write the checkpoint from the cell's own model and optimiser (the live state, packed or not)."""
        atomic_torch_save({
            "fingerprint": fingerprint(self.cfg), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "order_gen": self.order_gen.get_state(), "aug_gen": self.aug_gen.get_state(),
            "torch_rng": torch.get_rng_state(), "state": self.state,
        }, self.ckpt_path)

    def finish(self, num_classes: int, use_amp: bool) -> dict[str, Any]:
        result, state = self.result, self.state
        last_row = self.last_row
        if last_row is None and state["epoch"] > 0:
            last_row = _last_metrics_row(self.metrics.path)
        result["epochs_completed"] = state["epoch"]
        result["train_time_s"] = state["train_time_s"]
        result["precision"] = "bf16-autocast" if use_amp else "fp32"
        if last_row is not None:
            result.update(
                test_acc_last=last_row["test_acc"],
                test_acc_best=state["best_acc"],
                best_epoch=state["best_epoch"],
                per_class_test_acc_last=[last_row[f"test_acc_class_{k}"] for k in range(num_classes)],
                per_class_test_acc_best=state["best_per_class"],
                train_acc_clean_last=last_row["train_acc_clean"],
                memorised_last=last_row["memorised"],
                corrected_last=last_row["corrected"],
            )
        return result


def cell_losses(members: Sequence[CellRun], loss_groups: Sequence[tuple[Any, int, int]], logits: torch.Tensor,
                noisy: torch.Tensor) -> torch.Tensor:
    """Each cell's training loss on its logits [K, B, classes] and noisy labels [K, B]: its loss
    (CE in a warm-up epoch), plus its L1 term where it has one. Cells of one group share a loss
    function: one call on all their samples, each cell's batch mean of its own values."""
    losses = []
    for _, first, stop in loss_groups:
        run = members[first]
        if stop - first > 1:
            values = run.loss_fn.values(logits[first:stop].flatten(0, 1), noisy[first:stop].flatten())
            losses.append(values.view(stop - first, -1).mean(1))
        elif run.settings.in_warmup(run.state["epoch"]):
            losses.append(F.cross_entropy(logits[first], noisy[first]).reshape(1))
        else:
            losses.append(run.loss_fn(logits[first], noisy[first]).reshape(1))
    loss = torch.cat(losses)
    if not any(run.l1 for run in members):
        return loss
    return torch.stack([value + run.l1 * l1_norm(run.model) if run.l1 else value
                        for value, run in zip(loss.unbind(), members)])


def train(
    cfg: DictConfig,
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    data: TrainData,
    run_dir: Path,
    logger,
    on_epoch: Callable[[dict], None] | None = None,
    settings: TrainingSettings = TrainingSettings(),
) -> dict[str, Any]:
    """Train ``model`` and return the figures summary.json needs (status, last/best epochs...)."""
    return train_pack([Cell(cfg, model, loss_fn, data.noisy_y, Path(run_dir), logger, on_epoch, settings=settings)],
                      data)[0]


def train_pack(cells: Sequence[Cell], data: TrainData) -> list[dict[str, Any]]:
    """Train the cells together, one stacked model, and return each cell's summary figures.

    The cells share ``data`` (images, clean labels, test set; ``data.noisy_y`` is not read, each
    cell brings its own) and their whole ``trainer`` config. Cells may start at different epochs
    (resumed from their checkpoints); each round trains every unfinished cell for one epoch of its
    own. A cell that diverges leaves the pack, which goes on with the others.
    """
    t = cells[0].cfg.trainer
    shared = OmegaConf.to_container(t, resolve=True)
    for cell in cells[1:]:
        changed = diff_keys(shared, OmegaConf.to_container(cell.cfg.trainer, resolve=True))
        if changed:
            raise ConfigError(f"cells of one pack must share their trainer config; {cell.run_dir} differs "
                              f"from {cells[0].run_dir} in: {', '.join('trainer.' + c for c in changed)}")
    device = resolve_device(t.device)
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    use_amp = bf16_is_fast(device) if t.amp == "auto" else t.amp
    # channels_last by default on CPU too: scripts/bench_trainer.py measures it fastest there
    # (oneDNN's NHWC convolutions; NCHW single-channel convs take a much slower path).
    channels_last = True if t.channels_last == "auto" else t.channels_last
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext

    data = data.to(device)
    runs = [CellRun(i, cell, t, device, channels_last, data.num_classes) for i, cell in enumerate(cells)]
    for run in runs:  # every checkpoint is checked before any cell's files change
        run.resume(device)
    for run in runs:
        run.metrics.keep_epochs_up_to(run.state["epoch"])
    augment = build_augment(data.augment, data.mean, data.std)

    n = len(data.clean_y)
    steps_per_epoch = math.ceil(n / t.batch_size)
    show_bar = bool(t.progress) and sys.stderr.isatty()
    model: StackedModel | None = None
    step_model: Callable | None = None
    members: list[CellRun] = []  # the pack's cells, in its order
    loss_groups: list[tuple[Any, int, int]] = []  # runs of members evaluated by one loss call

    def repack(staying: list[CellRun]) -> None:
        """The pack's model for ``staying``: the cells' own models, computed at once."""
        nonlocal model, members, step_model, loss_groups
        # Cells with the same loss side by side: one loss call for each run of them.
        members = sorted(staying, key=lambda r: (r.loss_key or "", r.index))
        loss_groups = equal_runs([r.loss_key or r.index for r in members])
        model = StackedModel([r.model for r in members], channels_last).train() if members else None
        step_model = None if model is None else torch.compile(model) if t.compile else model

    def leave_if_diverged(epoch: EpochPlan) -> None:
        finite = epoch.stats.finite()
        if all(finite):
            return
        for run, ok in zip(members, finite):
            if not ok:
                run.diverge(_prefix(run, len(cells)))
        keep = [k for k, ok in enumerate(finite) if ok]
        epoch.keep(keep)
        repack([members[k] for k in keep])

    active = [run for run in runs if run.state["epoch"] < t.epochs]
    while active:
        if set(active) != set(members):
            repack(active)
        start = time.perf_counter()
        epoch = EpochPlan(
            lrs=[r.begin_epoch() for r in members],
            perms=torch.stack([torch.randperm(n, generator=r.order_gen) for r in members]).to(device),
            noisy=torch.stack([r.noisy_y for r in members]),
            stats=EpochStats(device, len(members)))
        batches = range(steps_per_epoch)
        if show_bar:
            from tqdm import tqdm
            note = f", {len(members)} cells" if len(members) > 1 else ""
            batches = tqdm(batches, desc=f"epoch {members[0].state['epoch'] + 1}/{t.epochs}{note}",
                           leave=False, file=sys.stderr)
        for step in batches:
            size = len(members)
            idx = epoch.perms[:, step * t.batch_size:(step + 1) * t.batch_size]  # [K, B]
            batch = idx.shape[1]
            x = augment(data.train_x[idx].flatten(0, 1), [r.aug_gen for r in members])  # each cell its own draws
            noisy, clean = epoch.noisy.gather(1, idx), data.clean_y[idx]
            with autocast():
                logits = step_model(x.view(size, batch, *x.shape[1:]))
            logits = logits.float()  # [K, B, classes]
            loss = cell_losses(members, loss_groups, logits, noisy)  # [K]
            for run in members:
                run.optimizer.zero_grad(set_to_none=True)
            # Each cell's loss depends on its own parameters only: the gradient of the sum is, cell
            # by cell, every cell's own gradient.
            loss.sum().backward()
            for k, run in enumerate(members):
                run.clip_and_step(t.grad_clip, step, loss[k], idx[k])
            epoch.stats.add(loss, logits, noisy, clean)
            if (step + 1) % DIVERGENCE_CHECK_STEPS == 0:
                leave_if_diverged(epoch)
                if not members:
                    break
        if members:
            leave_if_diverged(epoch)
        if not members:
            break
        for run in members:
            if run.stage_lr is None:  # (a fixed-lr stage has no schedule)
                run.scheduler.step()
        # Eval passes hold K copies of each image: fewer images per pass for a larger pack.
        eval_rows = t.eval_batch_size if len(members) == 1 else \
            min(t.eval_batch_size, max(t.batch_size, math.ceil(t.eval_batch_size / len(members))))
        evals = evaluate_pack(model, data.test_x, data.test_y, data.mean, data.std, data.num_classes,
                              eval_rows, autocast, cells=len(members))
        elapsed = time.perf_counter() - start
        with interrupts_deferred():  # an epoch's metrics row and its checkpoint are written together
            for k, (run, ev) in enumerate(zip(members, evals)):
                row = {"epoch": run.state["epoch"] + 1, "lr": epoch.lrs[k], **epoch.stats.result(k),
                       "test_loss": ev["test_loss"], "test_acc": ev["test_acc"],
                       **{f"test_acc_class_{c}": float(a) for c, a in enumerate(ev["per_class"])},
                       "epoch_time_s": elapsed}
                run.end_epoch(row, ev["per_class"], t, _prefix(run, len(cells)))
            for run in members:
                if run.checkpoint_due(t):
                    run.save_checkpoint()
        active = [run for run in members if run.state["epoch"] < t.epochs]

    results = [run.finish(data.num_classes, use_amp) for run in runs]
    numerics = numerics_settings(device, use_amp, channels_last, bool(t.compile), len(cells))
    for result in results:
        result["numerics"] = numerics
        if len(cells) > 1:
            result["pack_size"] = len(cells)
    return results


@contextlib.contextmanager
def interrupts_deferred():
    """Hold a Ctrl-C (SIGINT) until the block ends, so that a run interrupted while it writes an
    epoch's results keeps that epoch whole: its metrics row and the checkpoint to resume from."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(signal.SIGINT, None)


def numerics_settings(device: torch.device, use_amp: bool, channels_last: bool, compiled: bool,
                      pack: int) -> dict[str, Any]:
    """The settings a run's numbers depend on in their last digits that are not part of its identity
    (``artifacts.fingerprint``), as training used them: the order of floating-point sums changes with
    the intra-op thread count (the CPU's kernels split reductions by thread), the memory layout, a
    compiled or stacked (packed) model, and the GPU's kernels; bf16 autocast rounds activations."""
    settings = {"device": device.type, "threads": torch.get_num_threads(), "bf16_autocast": bool(use_amp),
                "channels_last": bool(channels_last), "compile": compiled, "pack": pack}
    if device.type == "cuda":
        settings.update(gpu=torch.cuda.get_device_name(device), tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                        tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return settings


def shared_loss_key(loss_fn: torch.nn.Module, settings: TrainingSettings) -> str | None:
    """Cells with equal keys train on the same per-sample loss function, which a pack evaluates for
    all of them in one call; None where the loss is evaluated cell by cell (it depends on the whole
    batch or on the epoch's stage, or is not a built ``Loss``)."""
    if not isinstance(loss_fn, Loss) or not loss_fn.per_sample or settings.staged:
        return None
    function = loss_fn.function
    return json.dumps([loss_fn.name, f"{function.__module__}.{function.__qualname__}", loss_fn.hyperparameters],
                      sort_keys=True, default=str)


def equal_runs(values: Sequence) -> list[tuple[Any, int, int]]:
    """Runs of equal consecutive values: [(value, start, stop), ...]."""
    runs: list[tuple[Any, int, int]] = []
    for i, v in enumerate(values):
        if runs and runs[-1][0] == v:
            runs[-1] = (v, runs[-1][1], i + 1)
        else:
            runs.append((v, i, i + 1))
    return runs


def _prefix(run: CellRun, cells: int) -> str:
    """Log lines of a pack's cells name their run directory."""
    return f"{run.name}: " if cells > 1 else ""


def _last_metrics_row(path: Path) -> dict[str, float] | None:
    import csv

    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for k, v in rows[-1].items()} if rows else None
