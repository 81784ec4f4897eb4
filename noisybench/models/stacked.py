"""K models of one architecture as one module: the model of a pack of cells.

Every layer with weights computes the K cells' layers at once: a convolution over K cells is one
grouped convolution (``groups = K``), a linear layer one batched matmul, a BatchNorm layer one
BatchNorm over K times the channels (per channel, so each cell keeps its own statistics). This
is what ``torch.func.vmap`` over ``stack_module_state`` makes of these layers, written out
directly: no per-op batching rules, native BatchNorm, channels_last and ``torch.compile`` as for
one model.

The stacked layers hold no weights of their own: each forward stacks the cells' own parameters
(a copy of the weights, small beside the activations), so autograd gives every cell's parameters
their own gradients and each cell's own ``torch.optim`` optimiser steps them, as in a run alone.
BatchNorm's running statistics are copied back to each cell's layer after a training forward.
The cells' models are therefore always the live state: a checkpoint is a cell's own.

``StackedModel`` maps ``[K, B, C, H, W]`` to ``[K, B, classes]``. Inside, activations are
``[B, K*C, H, W]`` with cell k's channels at ``k*C:(k+1)*C``.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from noisybench.registry import ConfigError


def _joined(modules: Sequence[nn.Module], name: str, join=torch.cat) -> torch.Tensor | None:
    """The cells' tensor ``name`` (a parameter or buffer), joined along a new or the first
    dimension; None where the layers have none (a conv without bias)."""
    return None if getattr(modules[0], name) is None else join([getattr(m, name) for m in modules])


class PackedConv2d(nn.Module):
    """K ``nn.Conv2d`` as one grouped convolution over ``[B, K*C_in, H, W]``."""

    def __init__(self, convs: Sequence[nn.Conv2d]):
        super().__init__()
        c = convs[0]
        if c.padding_mode != "zeros":
            raise ConfigError(f"a pack cannot stack Conv2d with padding_mode={c.padding_mode!r}; "
                              "use trainer.pack=1")
        self.cells, self.stride, self.padding, self.dilation, self.groups = (
            len(convs), c.stride, c.padding, c.dilation, c.groups)
        self.convs = list(convs)  # not submodules: the cells own their parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = _joined(self.convs, "weight")  # [K*C_out, C_in / groups, kh, kw]
        return F.conv2d(x, weight, _joined(self.convs, "bias"), self.stride, self.padding, self.dilation, self.groups * self.cells)


class PackedLinear(nn.Module):
    """K ``nn.Linear`` as one batched matmul over ``[B, K*in_features]``."""

    def __init__(self, linears: Sequence[nn.Linear]):
        super().__init__()
        self.cells, self.in_features = len(linears), linears[0].in_features
        self.out_features = linears[0].out_features
        self.linears = list(linears)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        x = x.reshape(batch, self.cells, self.in_features).transpose(0, 1)  # [K, B, in]
        weight = _joined(self.linears, "weight", torch.stack).transpose(1, 2)
        bias = _joined(self.linears, "bias", torch.stack)
        out = torch.bmm(x, weight) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, weight)
        return out.transpose(0, 1).reshape(batch, self.cells * self.out_features)


class PackedBatchNorm(nn.Module):
    """K ``BatchNorm1d``/``BatchNorm2d`` as one BatchNorm over ``K*C`` channels."""

    def __init__(self, norms: Sequence[nn.modules.batchnorm._BatchNorm]):
        super().__init__()
        n = norms[0]
        if n.momentum is None:
            raise ConfigError("a pack cannot stack BatchNorm with momentum=None (a cumulative average "
                              "over each cell's own batch count); use trainer.pack=1")
        self.norms = list(norms)
        self.eps, self.momentum, self.track_running_stats = n.eps, n.momentum, n.track_running_stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norms = self.norms
        running_mean, running_var = _joined(norms, "running_mean"), _joined(norms, "running_var")
        use_running = not self.training or self.track_running_stats
        updates = self.training and self.track_running_stats and running_mean is not None
        if updates and norms[0].num_batches_tracked is not None:
            torch._foreach_add_([m.num_batches_tracked for m in norms], 1)
        out = F.batch_norm(x, running_mean if use_running else None, running_var if use_running else None,
                           _joined(norms, "weight"), _joined(norms, "bias"), self.training or running_mean is None,
                           self.momentum, self.eps)
        if updates:  # the running statistics go back to each cell's own layer
            with torch.no_grad():
                size = len(norms[0].running_mean)
                torch._foreach_copy_([m.running_mean for m in norms], list(running_mean.split(size)))
                torch._foreach_copy_([m.running_var for m in norms], list(running_var.split(size)))
        return out


STACKABLE = {nn.Conv2d: PackedConv2d, nn.Linear: PackedLinear, nn.BatchNorm1d: PackedBatchNorm,
             nn.BatchNorm2d: PackedBatchNorm}


def stack_models(models: Sequence[nn.Module]) -> nn.Module:
    """One module computing ``len(models)`` models of the same architecture at once, on their
    own parameters, ``[B, K*C, H, W]`` to ``[B, K*classes]``.

    Layers with weights must be Conv2d, Linear or BatchNorm; everything else must act on each
    channel alone (activations, pooling, flatten, residual sums), which holds for every model of
    the zoo (tests/test_pack.py checks each against its cells).
    """
    skeleton = copy.deepcopy(models[0])
    for name, module in list(skeleton.named_modules()):
        own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        if not own:
            continue
        kind = STACKABLE.get(type(module))
        if kind is None:
            raise ConfigError(f"a pack cannot stack the {type(module).__name__} layer '{name}' of this "
                              f"model (stackable: {', '.join(t.__name__ for t in STACKABLE)}); use trainer.pack=1")
        replacement = kind([m.get_submodule(name) for m in models])
        replacement.train(module.training)
        parent, _, attr = name.rpartition(".")
        setattr(skeleton.get_submodule(parent) if parent else skeleton, attr, replacement)
    return skeleton


class StackedModel(nn.Module):
    """The pack's model: ``[K, B, C, H, W]`` (any strides) to ``[K, B, classes]``, the K cells'
    models computed at once on their own parameters. ``parameters()`` are the cells'."""

    def __init__(self, models: Sequence[nn.Module], channels_last: bool):
        super().__init__()
        self.cells = nn.ModuleList(models)  # the owners of the parameters, for parameters() and train()
        self.stacked = stack_models(models)
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cells, batch, channels, height, width = x.shape
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        inputs = torch.empty((batch, cells * channels, height, width), dtype=x.dtype, device=x.device,
                             memory_format=fmt)
        inputs.view(batch, cells, channels, height, width).copy_(x.transpose(0, 1))
        return self.stacked(inputs).view(batch, cells, -1).transpose(0, 1)
