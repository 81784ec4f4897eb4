"""Plain CNNs: the papers' 4-layer (MNIST) and 8-layer (CIFAR-10) nets, and the small digits net.

cnn4 and cnn8 follow APL's ``ToyModel`` layer for layer (reference §4.1, §4.2): blocks of
3x3 conv (padding 1, bias) -> BatchNorm -> ReLU, a 2x2 max-pool after each stage, then
Linear -> BatchNorm1d -> ReLU -> Linear.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from noisybench.models.build import MODELS
from noisybench.registry import ConfigError


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def conv_stages(in_channels: int, stages: Sequence[Sequence[int]]) -> list[nn.Module]:
    """Each stage: its conv_bn_relu blocks, then a 2x2 max-pool that halves the image."""
    layers: list[nn.Module] = []
    for widths in stages:
        for width in widths:
            layers.append(conv_bn_relu(in_channels, width))
            in_channels = width
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return layers


def papers_cnn(
    in_channels: int,
    num_classes: int,
    stages: Sequence[Sequence[int]],
    final_size: int,
    hidden: int,
) -> nn.Sequential:
    """The ToyModel layout; ``final_size``: side of the last feature map for the paper's input."""
    flat_features = stages[-1][-1] * final_size * final_size
    return nn.Sequential(
        *conv_stages(in_channels, stages),
        nn.Flatten(),
        nn.Linear(flat_features, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


@MODELS.register(input_shapes="(C,28,28)", reference="APL ToyModel('MNIST'), 0.42 M parameters")
def cnn4(in_channels: int, num_classes: int) -> nn.Module:
    # 28 -> 14 -> 7 after the two pools: Linear(64*7*7=3136, 128).
    return papers_cnn(in_channels, num_classes, stages=[[32], [64]], final_size=7, hidden=128)


@MODELS.register(input_shapes="(C,32,32)", reference="APL ToyModel('CIFAR10'), 1.64 M parameters")
def cnn8(in_channels: int, num_classes: int) -> nn.Module:
    # 32 -> 16 -> 8 -> 4 after the three pools: Linear(196*4*4=3136, 256).
    return papers_cnn(
        in_channels,
        num_classes,
        stages=[[64, 64], [128, 128], [196, 196]],
        final_size=4,
        hidden=256,
    )


@MODELS.register(input_shapes="any (C,H,W) with H,W >= 2")
def small_cnn(
    in_channels: int, num_classes: int, widths: Sequence[int] = (32, 64), pooled_size: int = 2
) -> nn.Module:
    """conv_bn_relu(widths[0]) -> 2x2 max-pool -> conv_bn_relu for each further width ->
    adaptive average pool to pooled_size x pooled_size -> Linear. The adaptive pool lets it take
    any image size (8x8 digits, 28x28 MNIST, 32x32 CIFAR)."""
    valid_widths = isinstance(widths, Sequence) and not isinstance(widths, str) and len(widths) > 0
    if not valid_widths or not all(_is_positive_int(width) for width in widths):
        raise ConfigError(
            "model 'small_cnn' option widths must be a non-empty list of positive integers, "
            f"got {widths!r}"
        )
    if not _is_positive_int(pooled_size):
        raise ConfigError(
            f"model 'small_cnn' option pooled_size must be a positive integer, got {pooled_size!r}"
        )
    return nn.Sequential(
        *conv_stages(in_channels, [widths[:1]]),
        *(conv_bn_relu(a, b) for a, b in zip(widths[:-1], widths[1:])),
        nn.AdaptiveAvgPool2d(pooled_size),
        nn.Flatten(),
        nn.Linear(widths[-1] * pooled_size * pooled_size, num_classes),
    )


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
