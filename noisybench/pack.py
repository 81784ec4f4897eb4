"""Packs: K cells of a sweep trained at once on one device, as one stacked model
(noisybench/models/stacked.py) whose cells keep their own parameters and optimisers.

Here: which cells may share a pack (they share dataset, model and training protocol, and differ
in loss, noise and seeds), how a sweep groups its cells into pack jobs and names them, and the
memory a pack needs on its device. A single run is a pack of one cell; a cell in a larger pack
gets its numbers up to the float32 rounding of the grouped kernels (tests/test_pack.py states
and justifies the tolerance).
"""
from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .artifacts import atomic_write_text, diff_keys
from .registry import ConfigError

# The config sections every cell of a pack shares; the rest (seed, noise, loss, logger) may differ.
SHARED_SECTIONS = ("dataset", "model", "trainer", "data")
# Share of the device's free memory a pack may plan to fill: the caching allocator's
# fragmentation and the kernels' workspaces need the rest.
USABLE_MEMORY_SHARE = 0.85


# ---------------------------------------------------------------------------------------------
# Which cells can share a pack
# ---------------------------------------------------------------------------------------------

def pack_key(cfg: DictConfig) -> str:
    """Cells with equal keys can train in one pack (what a sweeper groups cells by)."""
    return json.dumps({k: OmegaConf.to_container(cfg[k], resolve=True) if k in cfg else None
                       for k in SHARED_SECTIONS}, sort_keys=True, default=str)


def check_packable(cfgs: Sequence[DictConfig], names: Sequence[str]) -> None:
    """Raise a ConfigError naming the first setting in which a cell differs from the first."""
    first = json.loads(pack_key(cfgs[0]))
    for cfg, name in zip(cfgs[1:], names[1:]):
        changed = diff_keys(first, json.loads(pack_key(cfg)))
        if changed:
            raise ConfigError(
                f"cells of one pack must share {', '.join(SHARED_SECTIONS)}; {name} differs from "
                f"{names[0]} in: {', '.join(changed)}")


# ---------------------------------------------------------------------------------------------
# Packs as sweep jobs
# ---------------------------------------------------------------------------------------------

# A pack job's list of its cells' run directories, in its own directory.
PACK_MANIFEST = "pack.json"
# Where a sweep keeps its pack jobs' directories (hidden: the leaderboard does not look there).
PACKS_FOLDER = ".packs"


def check_pack_loggers(loggers: Sequence[str]) -> None:
    """The cells of one pack (their ``logger.name``s) can all log from one process."""
    if len(loggers) > 1 and "wandb" in loggers:
        raise ConfigError("logger=wandb keeps one wandb run per process, so it cannot log a pack of cells; "
                          "use trainer.pack=1 with logger=wandb")


def group_packs(keys: Sequence[str], settings: Sequence[int | str]) -> list[list[int]]:
    """The jobs of a sweep: cells (indices, in sweep order) grouped by ``pack_key`` into packs of
    up to ``trainer.pack`` cells. A cell with ``pack=1`` is a job of its own; ``auto`` makes one
    job of all its compatible cells, which the job splits into packs by its device's memory."""
    jobs: list[list[int]] = []
    open_jobs: dict[str, list[int]] = {}
    for i, (key, setting) in enumerate(zip(keys, settings)):
        limit = None if setting == "auto" else int(setting)
        job = open_jobs.get(key)
        if limit == 1 or job is None or (limit is not None and len(job) >= limit):
            job = [i]
            jobs.append(job)
            open_jobs[key] = job
        else:
            job.append(i)
    return jobs


def pack_job_name(cells: Sequence[Path]) -> str:
    """The same cells always make the same name (a sweep started twice finds its pack's lock)."""
    import hashlib

    digest = hashlib.sha1("\n".join(sorted(str(Path(c).absolute()) for c in cells)).encode()).hexdigest()
    return f"pack-{len(cells)}-{digest[:12]}"


def write_pack_manifest(job_dir: Path, cells: Sequence[Path]) -> Path:
    path = job_dir / PACK_MANIFEST
    atomic_write_text(path, json.dumps({"cells": [str(Path(c).absolute()) for c in cells]}, indent=1) + "\n")
    return path


def read_pack_manifest(path: Path) -> list[Path]:
    try:
        return [Path(c) for c in json.loads(Path(path).read_text())["cells"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path} is not a pack manifest (a JSON object with a 'cells' list): {e}") from None


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------

def cell_footprint_bytes(model: nn.Module, input_shape: Sequence[int], train_size: int, batch_size: int,
                         device: torch.device, use_amp: bool, channels_last: bool) -> int:
    """Device memory one more cell adds to a pack, measured on one training batch of a copy of
    its model: what autograd keeps for the backward (saved-tensor hooks count each storage
    once), twice the largest of those for the backward's transient gradients, the parameters four
    times (weights, gradients, momentum, the step's temporaries), the batch and its noisy labels."""
    probe = copy.deepcopy(model).to(device)
    if channels_last:
        probe = probe.to(memory_format=torch.channels_last)
    probe.train()
    seen: dict[tuple[int, int], int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        if t.device == device and t.layout == torch.strided:
            storage = t.untyped_storage()
            seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return t

    x = torch.zeros((batch_size, *input_shape), device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp)
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t), autocast:
        probe(x).float().sum()
    saved = sum(seen.values())
    largest = max(seen.values(), default=0)
    params = sum(p.numel() * p.element_size() for p in probe.parameters())
    buffers = sum(b.numel() * b.element_size() for b in probe.buffers())
    labels = train_size * 8  # the cell's int64 noisy labels on the device
    return saved + 2 * largest + 4 * params + buffers + x.numel() * x.element_size() + labels


def free_memory_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors on ``device`` (CUDA: the driver's free memory plus this process's
    cached free blocks; CPU: MemAvailable), or None where it cannot be read."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def shared_bytes(tensors: Sequence[torch.Tensor], device: torch.device) -> int:
    """What the pack's shared data will add on ``device`` (nothing where it already lives there)."""
    return sum(t.numel() * t.element_size() for t in tensors if t.device != device)


def pack_capacity(per_cell: int, shared: int, free: int | None) -> int | None:
    """How many cells fit in ``free`` bytes (None: unknown)."""
    if free is None:
        return None
    return max(0, int((free * USABLE_MEMORY_SHARE - shared) // max(per_cell, 1)))


def check_pack_fits(size: int, per_cell: int, shared: int, free: int | None, device: torch.device) -> None:
    """Fail early, naming K and the memory it needs, when a pack of ``size`` cells cannot fit."""
    fit = pack_capacity(per_cell, shared, free)
    if fit is None or size <= fit:
        return
    gib = 2 ** 30
    raise ConfigError(
        f"trainer.pack={size}: a pack of {size} cells needs about {(size * per_cell + shared) / gib:.2f} GiB "
        f"on {device} ({per_cell / 2 ** 20:.1f} MiB per cell, measured on one batch, plus "
        f"{shared / gib:.2f} GiB of shared data), but only {free * USABLE_MEMORY_SHARE / gib:.2f} GiB "
        f"of the {free / gib:.2f} GiB free may be planned for; at most {fit} cells fit: use "
        f"trainer.pack={max(fit, 1)} or trainer.pack=auto")


def resolve_pack_size(setting: int | str, cells: int, per_cell: Callable[[], int], shared: int,
                      device: torch.device) -> int:
    """The number of cells per pack: ``trainer.pack`` (checked against the device's memory) or,
    for ``auto``, as many as fit by the measured per-cell footprint; never more than ``cells``."""
    if cells <= 1 or setting == 1:
        return 1
    footprint, free = per_cell(), free_memory_bytes(device)
    if setting == "auto":
        fit = pack_capacity(footprint, shared, free)
        if fit == 0:
            check_pack_fits(1, footprint, shared, free, device)
        return cells if fit is None else max(1, min(cells, fit))
    size = min(int(setting), cells)
    check_pack_fits(size, footprint, shared, free, device)
    return size
