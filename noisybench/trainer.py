"""The training loop (config group ``trainer``), readable top to bottom.

The whole uint8 dataset lives on the training device. Each epoch draws a seeded permutation,
builds batches by indexing, augments them with batched tensor operations and takes SGD steps;
metrics are accumulated on the device and read once per epoch, then the test set is evaluated in
large batches. Every epoch appends one row to metrics.csv; every ``checkpoint_every`` epochs a
checkpoint makes the run resumable to the same numbers.
"""
from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from .artifacts import CHECKPOINT_FILE, METRICS_FILE, MetricsCSV, atomic_torch_save
from .data.augment import build_augment, normalize
from .registry import ConfigError

log = logging.getLogger("noisybench")

SCHEDULES = ("cosine", "multistep", "constant")
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
    resolve_device(t.device)


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


def seeds_for(seed: int) -> dict[str, int]:
    """Independent streams from one training seed: model init, data order, augmentation."""
    init, order, aug = np.random.SeedSequence(seed).generate_state(3)
    return {"init": int(init), "order": int(order), "augment": int(aug)}


def l1_norm(model: torch.nn.Module) -> torch.Tensor:
    return sum(p.abs().sum() for p in model.parameters())


class EpochStats:
    """Running sums of one epoch, kept on the device so the loop never waits on the host."""

    def __init__(self, device: torch.device):
        z = lambda: torch.zeros((), device=device, dtype=torch.float64)  # noqa: E731
        self.loss, self.n, self.noisy_ok, self.clean_ok = z(), 0, z(), z()
        self.flipped, self.memorised, self.corrected = z(), z(), z()

    def add(self, loss, logits, noisy, clean) -> None:
        pred = logits.detach().argmax(1)
        flipped = noisy != clean
        self.loss += loss.detach().double() * len(noisy)
        self.n += len(noisy)
        self.noisy_ok += (pred == noisy).sum()
        self.clean_ok += (pred == clean).sum()
        self.flipped += flipped.sum()
        self.memorised += (flipped & (pred == noisy)).sum()
        self.corrected += (flipped & (pred == clean)).sum()

    def finite(self) -> bool:
        return bool(torch.isfinite(self.loss))

    def result(self) -> dict[str, float]:
        n, f = self.n, max(float(self.flipped), 1.0)
        return {
            "train_loss": float(self.loss) / n,
            "train_acc_noisy": float(self.noisy_ok) / n,
            "train_acc_clean": float(self.clean_ok) / n,
            # Shares of the flipped samples predicted as their noisy / their true label (0 when none).
            "memorised": float(self.memorised) / f,
            "corrected": float(self.corrected) / f,
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


@torch.no_grad()
def evaluate(model, x_u8, y, mean, std, num_classes, batch_size, autocast, channels_last):
    """Test loss (CE, as every paper's evaluator computes it), accuracy and per-class accuracy."""
    model.eval()
    loss_sum = torch.zeros((), device=x_u8.device, dtype=torch.float64)
    correct = torch.zeros(num_classes, device=x_u8.device, dtype=torch.float64)
    for start in range(0, len(y), batch_size):
        x = normalize(x_u8[start:start + batch_size], mean, std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        target = y[start:start + batch_size]
        with autocast():
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, target, reduction="sum").double()
        hit = logits.argmax(1) == target
        correct += torch.bincount(target[hit], minlength=num_classes).double()
    model.train()
    per_class = (correct / torch.bincount(y, minlength=num_classes).clamp(min=1).double()).cpu().numpy()
    return {
        "test_loss": float(loss_sum) / len(y),
        "test_acc": float(correct.sum()) / len(y),
        "per_class": per_class,
    }


def make_optimizer(model, t: DictConfig, weight_decay: float) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum,
                           nesterov=bool(t.nesterov), weight_decay=weight_decay)


def make_scheduler(optimizer, t: DictConfig):
    if t.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t.epochs, eta_min=t.eta_min)
    if t.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(t.milestones), gamma=t.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """What must not change between a checkpoint and the run that resumes from it."""
    c = OmegaConf.to_container(cfg, resolve=True)
    runtime = ("device", "progress", "num_threads", "compile", "checkpoint_every")
    return {
        "dataset": c["dataset"], "noise": c["noise"], "model": c["model"], "loss": c["loss"],
        "seed": c["seed"], "trainer": {k: v for k, v in c["trainer"].items() if k not in runtime},
    }


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def train(
    cfg: DictConfig,
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    data: TrainData,
    run_dir: Path,
    logger,
    on_epoch: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` and return the figures summary.json needs (status, last/best epochs...)."""
    t = cfg.trainer
    device = resolve_device(t.device)
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    use_amp = bf16_is_fast(device) if t.amp == "auto" else t.amp
    # channels_last by default on CPU too: scripts/bench_trainer.py measures it fastest there
    # (oneDNN's NHWC convolutions; NCHW single-channel convs take a much slower path).
    channels_last = True if t.channels_last == "auto" else t.channels_last
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext
    seeds = seeds_for(cfg.seed)

    data = data.to(device)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    weight_decay = t.weight_decay if getattr(loss_fn, "weight_decay", None) is None else loss_fn.weight_decay
    optimizer = make_optimizer(model, t, weight_decay)
    scheduler = make_scheduler(optimizer, t)
    step_model = torch.compile(model) if t.compile else model
    augment = build_augment(data.augment, data.mean, data.std)
    order_gen = torch.Generator().manual_seed(seeds["order"])
    aug_gen = torch.Generator(device=device).manual_seed(seeds["augment"])
    loss_kwargs = {"model": model} if getattr(loss_fn, "needs_model", False) else {}

    metrics = MetricsCSV(run_dir / METRICS_FILE, metric_columns(data.num_classes))
    ckpt_path = run_dir / CHECKPOINT_FILE
    state = {"epoch": 0, "best_acc": -1.0, "best_epoch": 0, "best_per_class": None, "train_time_s": 0.0}
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        changed = _diff_keys(ckpt["fingerprint"], fingerprint(cfg))
        if changed:
            raise ConfigError(
                f"{ckpt_path} was written by a run with a different config (differs in: "
                f"{', '.join(changed)}); use a new run directory or restore those values")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        order_gen.set_state(ckpt["order_gen"])
        aug_gen.set_state(ckpt["aug_gen"].to(aug_gen.get_state().device))
        torch.set_rng_state(ckpt["torch_rng"])
        state = ckpt["state"]
        log.info("resuming from %s at epoch %d", ckpt_path, state["epoch"])
    metrics.keep_epochs_up_to(state["epoch"])

    n = len(data.noisy_y)
    steps_per_epoch = math.ceil(n / t.batch_size)
    show_bar = bool(t.progress) and sys.stderr.isatty()
    result: dict[str, Any] = {"status": "completed", "epochs_completed": state["epoch"]}
    last_row: dict[str, Any] | None = None
    model.train()
    for epoch in range(state["epoch"], t.epochs):
        start = time.perf_counter()
        stage_lr = loss_fn.stage_lr(epoch) if hasattr(loss_fn, "stage_lr") else None
        if stage_lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = stage_lr
        lr = optimizer.param_groups[0]["lr"]
        stats = EpochStats(device)
        perm = torch.randperm(n, generator=order_gen).to(device)
        batches = range(steps_per_epoch)
        if show_bar:
            from tqdm import tqdm
            batches = tqdm(batches, desc=f"epoch {epoch + 1}/{t.epochs}", leave=False, file=sys.stderr)
        diverged = False
        for step in batches:
            idx = perm[step * t.batch_size:(step + 1) * t.batch_size]
            x = augment(data.train_x[idx], aug_gen)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            noisy, clean = data.noisy_y[idx], data.clean_y[idx]
            with autocast():
                logits = step_model(x)
            logits = logits.float()
            loss = loss_fn(logits, noisy, **loss_kwargs)
            if t.l1:
                loss = loss + t.l1 * l1_norm(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            stats.add(loss, logits, noisy, clean)
            if (step + 1) % DIVERGENCE_CHECK_STEPS == 0 and not stats.finite():
                diverged = True
                break
        if diverged or not stats.finite():
            log.warning("epoch %d: the training loss is not finite; stopping the run as diverged", epoch + 1)
            result.update(status="diverged", diverged_epoch=epoch + 1)
            break
        if stage_lr is None:
            scheduler.step()
        ev = evaluate(model, data.test_x, data.test_y, data.mean, data.std, data.num_classes,
                      t.eval_batch_size, autocast, channels_last)
        row = {"epoch": epoch + 1, "lr": lr, **stats.result(),
               "test_loss": ev["test_loss"], "test_acc": ev["test_acc"],
               **{f"test_acc_class_{k}": float(a) for k, a in enumerate(ev["per_class"])},
               "epoch_time_s": time.perf_counter() - start}
        metrics.append(row)
        last_row = row
        state["epoch"] = epoch + 1
        state["train_time_s"] += row["epoch_time_s"]
        if ev["test_acc"] > state["best_acc"]:
            state.update(best_acc=ev["test_acc"], best_epoch=epoch + 1, best_per_class=ev["per_class"].tolist())
        log.info("epoch %d/%d lr %.5f train_loss %.4f train_acc(noisy) %.4f test_loss %.4f test_acc %.4f "
                 "memorised %.3f (%.1fs)", epoch + 1, t.epochs, lr, row["train_loss"], row["train_acc_noisy"],
                 row["test_loss"], row["test_acc"], row["memorised"], row["epoch_time_s"])
        logger.log({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
        if on_epoch is not None:
            on_epoch(row)
        if t.checkpoint_every and ((epoch + 1) % t.checkpoint_every == 0 or epoch + 1 == t.epochs):
            atomic_torch_save({
                "fingerprint": fingerprint(cfg), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "order_gen": order_gen.get_state(), "aug_gen": aug_gen.get_state(),
                "torch_rng": torch.get_rng_state(), "state": state,
            }, ckpt_path)

    if last_row is None and state["epoch"] > 0:
        last_row = _last_metrics_row(run_dir / METRICS_FILE)
    result["epochs_completed"] = state["epoch"]
    result["train_time_s"] = state["train_time_s"]
    result["precision"] = "bf16-autocast" if use_amp else "fp32"
    if last_row is not None:
        result.update(
            test_acc_last=last_row["test_acc"],
            test_acc_best=state["best_acc"],
            best_epoch=state["best_epoch"],
            per_class_test_acc_last=[last_row[f"test_acc_class_{k}"] for k in range(data.num_classes)],
            per_class_test_acc_best=state["best_per_class"],
            train_acc_clean_last=last_row["train_acc_clean"],
            memorised_last=last_row["memorised"],
            corrected_last=last_row["corrected"],
        )
    return result


def _last_metrics_row(path: Path) -> dict[str, float] | None:
    import csv

    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for k, v in rows[-1].items()} if rows else None
