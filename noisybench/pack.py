"""Packs: K cells of a sweep trained at once as one stacked model on one device.

Cells that share dataset, model and training protocol (and differ in loss, noise and seeds) run
as one network whose every layer holds the K cells' weights side by side: a convolution over K
cells is one grouped convolution (``groups = K``), a linear layer one batched matmul, and a
BatchNorm layer one BatchNorm over K times the channels, which keeps each cell's statistics
apart because BatchNorm is per channel. This is what ``torch.func.vmap`` over
``stack_module_state`` makes of these layers, written out directly: no per-op batching rules,
native BatchNorm running statistics, channels_last and ``torch.compile`` as for one model.

Activations are ``[B, K*C, H, W]`` with cell k's channels at ``k*C:(k+1)*C`` (logits
``[B, K*classes]``); parameters are ``[K, ...]``. A single run goes through the same loop
(``trainer.train_pack``) as a pack of one cell, whose model is the cell's own, so its numbers are
those of a model trained alone, bit for bit. A cell in a larger pack gets its numbers up to the
float32 rounding of the grouped kernels (tests/test_pack.py states and justifies the tolerance).

Also here: the per-cell SGD step and gradient clipping over stacked tensors, the batched
augmentation with each cell's own random draws, what cells a pack may hold, and the memory a pack
needs on its device.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
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
# The stacked model
# ---------------------------------------------------------------------------------------------

def _stack(tensors: Sequence[torch.Tensor], channels_last: bool) -> torch.Tensor:
    """``[K, ...]`` copy of the cells' tensors. A conv weight is laid out so that its
    ``flatten(0, 1)``, the grouped convolution's weight, is channels_last like the single model's."""
    first = tensors[0].detach()
    if channels_last and first.dim() == 4:
        flat = torch.empty((len(tensors) * first.shape[0], *first.shape[1:]), dtype=first.dtype,
                           device=first.device, memory_format=torch.channels_last)
        stacked = flat.view(len(tensors), *first.shape)
    else:
        stacked = torch.empty((len(tensors), *first.shape), dtype=first.dtype, device=first.device)
    with torch.no_grad():
        for k, t in enumerate(tensors):
            stacked[k].copy_(t)
    return stacked


def _stacked_parameter(modules: Sequence[nn.Module], name: str, channels_last: bool) -> nn.Parameter | None:
    tensors = [getattr(m, name) for m in modules]
    if tensors[0] is None:
        return None
    return nn.Parameter(_stack(tensors, channels_last), requires_grad=tensors[0].requires_grad)


class PackedConv2d(nn.Module):
    """K ``nn.Conv2d`` as one grouped convolution over ``[B, K*C_in, H, W]``."""

    def __init__(self, convs: Sequence[nn.Conv2d], channels_last: bool):
        super().__init__()
        c = convs[0]
        if c.padding_mode != "zeros":
            raise ConfigError(f"a pack cannot stack Conv2d with padding_mode={c.padding_mode!r}; "
                              "use trainer.pack=1")
        self.cells, self.stride, self.padding, self.dilation, self.groups = (
            len(convs), c.stride, c.padding, c.dilation, c.groups)
        self.weight = _stacked_parameter(convs, "weight", channels_last)
        self.register_parameter("bias", _stacked_parameter(convs, "bias", channels_last))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.flatten()
        return F.conv2d(x, self.weight.flatten(0, 1), bias, self.stride, self.padding, self.dilation,
                        self.groups * self.cells)


class PackedLinear(nn.Module):
    """K ``nn.Linear`` as one batched matmul over ``[B, K*in_features]``."""

    def __init__(self, linears: Sequence[nn.Linear]):
        super().__init__()
        self.cells, self.in_features, self.out_features = len(linears), linears[0].in_features, linears[0].out_features
        self.weight = _stacked_parameter(linears, "weight", False)
        self.register_parameter("bias", _stacked_parameter(linears, "bias", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        x = x.reshape(batch, self.cells, self.in_features).transpose(0, 1)  # [K, B, in]
        weight = self.weight.transpose(1, 2)
        out = torch.bmm(x, weight) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), x, weight)
        return out.transpose(0, 1).reshape(batch, self.cells * self.out_features)


class PackedBatchNorm(nn.Module):
    """K ``BatchNorm1d``/``BatchNorm2d`` as one BatchNorm over ``K*C`` channels: per channel, so
    each cell keeps its own batch statistics, running statistics and affine parameters."""

    def __init__(self, norms: Sequence[nn.modules.batchnorm._BatchNorm]):
        super().__init__()
        n = norms[0]
        if n.momentum is None:
            raise ConfigError("a pack cannot stack BatchNorm with momentum=None (a cumulative average "
                              "over each cell's own batch count); use trainer.pack=1")
        self.cells, self.eps, self.momentum = len(norms), n.eps, n.momentum
        self.track_running_stats = n.track_running_stats
        self.weight = _stacked_parameter(norms, "weight", False)
        self.register_parameter("bias", _stacked_parameter(norms, "bias", False))
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            tensors = [getattr(m, name) for m in norms]
            self.register_buffer(name, None if tensors[0] is None else _stack(tensors, False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        use_running = not self.training or self.track_running_stats
        flat = lambda t: None if t is None else t.view(-1)  # noqa: E731  (views: updates land in the [K, C] buffers)
        return F.batch_norm(
            x,
            flat(self.running_mean) if use_running else None,
            flat(self.running_var) if use_running else None,
            flat(self.weight), flat(self.bias),
            self.training or self.running_mean is None,
            self.momentum, self.eps)


STACKABLE = {nn.Conv2d: PackedConv2d, nn.Linear: PackedLinear, nn.BatchNorm1d: PackedBatchNorm,
             nn.BatchNorm2d: PackedBatchNorm}


def stack_models(models: Sequence[nn.Module], channels_last: bool) -> nn.Module:
    """One module computing ``len(models)`` models of the same architecture at once.

    Layers with weights must be Conv2d, Linear or BatchNorm; everything else must act on each
    channel alone (activations, pooling, flatten, residual sums), which holds for every model of
    the zoo (tests/test_pack.py checks each against its cells). Parameter and buffer names are the
    single model's, with a leading cell dimension.
    """
    packed = copy.deepcopy(models[0])
    for name, module in list(packed.named_modules()):
        own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        if not own:
            continue
        kind = STACKABLE.get(type(module))
        if kind is None:
            raise ConfigError(f"a pack cannot stack the {type(module).__name__} layer '{name}' of this "
                              f"model (stackable: {', '.join(t.__name__ for t in STACKABLE)}); use trainer.pack=1")
        cells = [m.get_submodule(name) for m in models]
        replacement = kind(cells, channels_last) if kind is PackedConv2d else kind(cells)
        replacement.train(module.training)
        parent, _, attr = name.rpartition(".")
        setattr(packed.get_submodule(parent) if parent else packed, attr, replacement)
    return packed


def pack_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``[B, K, C, H, W]`` (any strides) -> the pack's ``[B, K*C, H, W]``, in one copy."""
    batch, cells, channels, height, width = x.shape
    if cells == 1:  # exactly the single trainer's input
        x = x[:, 0]
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((batch, cells * channels, height, width), dtype=x.dtype, device=x.device, memory_format=fmt)
    out.view(batch, cells, channels, height, width).copy_(x)
    return out


class CellParameters:
    """Cell k's parameters inside a pack, for a loss or an L1 term that reads ``model.parameters()``."""

    def __init__(self, tensors: Sequence[torch.Tensor]):
        self.tensors = tuple(tensors)

    def parameters(self):
        return iter(self.tensors)


class Pack:
    """The cells' models and SGD state as one: ``module`` maps ``[B, K*C, H, W]`` to
    ``[B, K*classes]``; ``momentum_buffers`` are ``[K, ...]`` like the stacked parameters.

    The cells' own models and ``torch.optim.SGD`` objects hold their states between packs (at
    checkpoints, when a cell leaves): ``Pack(...)`` reads them, ``write_back`` returns them.
    With one cell the module is the cell's model itself.
    """

    def __init__(self, models: Sequence[nn.Module], optimizers: Sequence[torch.optim.SGD],
                 momentum: float, nesterov: bool, channels_last: bool):
        self.size = len(models)
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.module = models[0] if self.size == 1 else stack_models(models, channels_last)
        self.module.train()
        self.parameters = list(self.module.parameters())
        self.momentum_buffers: list[torch.Tensor] = []
        if self.momentum:
            cell_parameters = [list(model.parameters()) for model in models]
            with torch.no_grad():
                for i, p in enumerate(self.parameters):
                    buf = torch.zeros_like(self._stacked(p))
                    for k, opt in enumerate(optimizers):
                        held = opt.state.get(cell_parameters[k][i], {}).get("momentum_buffer")
                        # A cell without a buffer has taken no step: a zero buffer makes its first
                        # step the same as SGD's, buf = grad (0 * momentum + grad).
                        if held is not None:
                            buf[k].copy_(held)
                    self.momentum_buffers.append(buf)
            for opt in optimizers:
                opt.state.clear()  # the pack holds the buffers now

    def _stacked(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach() if self.size > 1 else t.detach().unsqueeze(0)

    def stacked_parameters(self) -> list[torch.Tensor]:
        return [self._stacked(p) for p in self.parameters]

    def stacked_grads(self) -> list[torch.Tensor | None]:
        return [None if p.grad is None else (p.grad if self.size > 1 else p.grad.unsqueeze(0))
                for p in self.parameters]

    def cell_parameters(self) -> list[Any]:
        """Per cell, something whose ``parameters()`` are that cell's (differentiable) tensors."""
        if self.size == 1:
            return [self.module]
        slices = [p.unbind(0) for p in self.parameters]  # one node per tensor: O(K) backward
        return [CellParameters([s[k] for s in slices]) for k in range(self.size)]

    def zero_grad(self) -> None:
        self.module.zero_grad(set_to_none=True)

    @torch.no_grad()
    def write_back(self, models: Sequence[nn.Module], optimizers: Sequence[torch.optim.SGD],
                   cells: Sequence[int]) -> None:
        """Copy the listed cells' parameters, buffers and momentum into their own model and SGD."""
        for k in cells:
            model, opt = models[k], optimizers[k]
            if self.size > 1:  # (one cell's module is its model)
                own = model.state_dict()
                for name, stacked in self.module.state_dict().items():
                    own[name].copy_(stacked[k])
            if self.momentum_buffers:
                for p, buf in zip(model.parameters(), self.momentum_buffers):
                    opt.state[p]["momentum_buffer"] = buf[k].clone()

    @torch.no_grad()
    def sgd_step(self, lrs: Sequence[float], weight_decays: Sequence[float]) -> None:
        """``torch.optim.SGD.step`` for every cell, each at its own lr and weight decay.

        The same operations in the same order as torch's SGD (dampening 0), on all cells at once
        wherever the cells' values agree and on runs of consecutive cells otherwise: a scalar
        ``alpha`` keeps SGD's fused multiply-add, which a per-cell tensor factor would not.
        """
        params, grads, bufs = [], [], []
        for i, (p, g) in enumerate(zip(self.stacked_parameters(), self.stacked_grads())):
            if g is not None:  # SGD skips parameters without a gradient
                params.append(p)
                grads.append(g)
                if self.momentum_buffers:
                    bufs.append(self.momentum_buffers[i])
        if not params:
            return
        for (lr, wd), start, stop in equal_runs(list(zip(lrs, weight_decays))):
            whole = start == 0 and stop == self.size
            cut = (lambda ts: ts) if whole else (lambda ts: [t[start:stop] for t in ts])  # noqa: E731
            p, g, b = cut(params), cut(grads), cut(bufs)
            if wd != 0:
                g = torch._foreach_add(g, p, alpha=wd)
            if self.momentum:
                torch._foreach_mul_(b, self.momentum)
                torch._foreach_add_(b, g)
                g = torch._foreach_add(g, b, alpha=self.momentum) if self.nesterov else b
            torch._foreach_add_(p, g, alpha=-lr)


def equal_runs(values: Sequence) -> list[tuple[Any, int, int]]:
    """Runs of equal consecutive values: [(value, start, stop), ...]."""
    runs: list[tuple[Any, int, int]] = []
    for i, v in enumerate(values):
        if runs and runs[-1][0] == v:
            runs[-1] = (v, runs[-1][1], i + 1)
        else:
            runs.append((v, i, i + 1))
    return runs


@torch.no_grad()
def grad_norms(grads: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """The 2-norm over each cell's gradients (``[K, ...]`` tensors), as ``clip_grad_norm_`` computes it: [K]."""
    rows = [g.unsqueeze(1) if g.dim() == 1 else g for g in grads if g is not None]  # a scalar's [K] -> [K, 1]
    norms = torch.stack([torch.linalg.vector_norm(r, 2, dim=tuple(range(1, r.dim()))) for r in rows])  # [tensors, K]
    return torch.linalg.vector_norm(norms, 2, dim=0)


def clip_grad_norms_(grads: Sequence[torch.Tensor | None], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` of each cell's own gradient (``[K, ...]`` tensors): the 2-norm over
    each cell's gradients, scale ``min(max_norm / (norm + 1e-6), 1)`` per cell. Returns the norms."""
    grads = [g for g in grads if g is not None]
    total = grad_norms(grads)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))
    return total


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
