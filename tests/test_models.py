"""Model zoo: exact sizes of the papers' nets, the papers' initialisation, shape checks, configs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from noisybench.models import MODELS, build_model
from noisybench.registry import ConfigError

MODEL_CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
# The input each model is written for (small_cnn: the 8x8 digits).
PAPER_INPUT = {
    "small_cnn": (1, 8, 8),
    "cnn4": (1, 28, 28),
    "cnn8": (3, 32, 32),
    "resnet18": (3, 32, 32),
    "resnet34": (3, 32, 32),
    "resnet50": (3, 32, 32),
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(c_in: int, c_out: int, k: int = 3, bias: bool = False) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def bn(c: int) -> int:
    return 2 * c


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def basic_stage(c_in: int, planes: int, blocks: int, stride: int) -> int:
    """BasicBlocks of two 3x3 conv+BN; the first adds a 1x1 conv+BN shortcut if shapes change."""
    total = (blocks - 1) * (conv(planes, planes) + bn(planes)) * 2
    total += conv(c_in, planes) + bn(planes) + conv(planes, planes) + bn(planes)
    if stride != 1 or c_in != planes:
        total += conv(c_in, planes, k=1) + bn(planes)
    return total


def bottleneck_stage(c_in: int, planes: int, blocks: int) -> int:
    """Bottlenecks: 1x1, 3x3, 1x1 (x4) conv+BN; in every stage the first block changes the
    channel count (64 -> 256, 256 -> 512, ...), so it has a 1x1 conv+BN shortcut."""
    inner = conv(planes, planes) + bn(planes) + conv(planes, 4 * planes, 1) + bn(4 * planes)
    total = blocks * inner + (blocks - 1) * (conv(4 * planes, planes, 1) + bn(planes))
    total += conv(c_in, planes, 1) + bn(planes) + conv(c_in, 4 * planes, 1) + bn(4 * planes)
    return total


def test_parameter_counts_match_the_papers_layer_lists():
    # cnn4: conv 1->32, conv 32->64 (3x3, bias), BN2d, Linear 3136->128, BN1d, Linear 128->10.
    cnn4 = conv(1, 32, bias=True) + bn(32) + conv(32, 64, bias=True) + bn(64)
    cnn4 += linear(3136, 128) + bn(128) + linear(128, 10)
    assert cnn4 == 422_090  # 0.42 M (performance.md §4.1)
    assert n_params(build_model({"name": "cnn4"}, (1, 28, 28), 10)) == cnn4

    widths = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 196), (196, 196)]
    cnn8 = sum(conv(a, b, bias=True) + bn(b) for a, b in widths)
    cnn8 += linear(3136, 256) + bn(256) + linear(256, 10)
    assert cnn8 == 1_639_794  # 1.64 M
    assert n_params(build_model({"name": "cnn8"}, (3, 32, 32), 10)) == cnn8

    stem = conv(3, 64) + bn(64)
    basic = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]  # (in, planes, stride)
    resnet18 = (
        stem
        + sum(basic_stage(a, b, n, s) for (a, b, s), n in zip(basic, [2, 2, 2, 2]))
        + linear(512, 10)
    )
    resnet34 = (
        stem
        + sum(basic_stage(a, b, n, s) for (a, b, s), n in zip(basic, [3, 4, 6, 3]))
        + linear(512, 10)
    )
    bottleneck = [(64, 64), (256, 128), (512, 256), (1024, 512)]
    resnet50 = stem + sum(bottleneck_stage(a, b, n) for (a, b), n in zip(bottleneck, [3, 4, 6, 3]))
    resnet50 += linear(2048, 10)
    # 11.17 M, 21.28 M, 23.52 M: the DA2Lite model-zoo figures quoted in performance.md §4.1.
    assert (resnet18, resnet34, resnet50) == (11_173_962, 21_282_122, 23_520_842)
    assert n_params(build_model({"name": "resnet18"}, (3, 32, 32), 10)) == resnet18
    assert n_params(build_model({"name": "resnet34"}, (3, 32, 32), 10)) == resnet34
    assert n_params(build_model({"name": "resnet50"}, (3, 32, 32), 10)) == resnet50


@pytest.mark.parametrize(
    "name, input_shape, num_classes",
    [
        ("cnn4", (1, 28, 28), 10),  # MNIST and Fashion-MNIST
        ("cnn8", (3, 32, 32), 100),  # CIFAR-100
        ("resnet18", (3, 32, 32), 10),
        ("resnet34", (3, 32, 32), 100),
        ("resnet50", (3, 32, 32), 100),
        ("small_cnn", (1, 8, 8), 10),  # digits
        ("small_cnn", (1, 28, 28), 10),  # MNIST
        ("small_cnn", (3, 32, 32), 100),
    ],
)
def test_output_shape(name, input_shape, num_classes):
    model = build_model({"name": name}, input_shape, num_classes)
    assert model.training  # the shape check leaves train mode on
    assert model(torch.zeros(3, *input_shape)).shape == (3, num_classes)


def test_small_cnn_is_small():
    # Tens of thousands of parameters: conv 1->32, conv 32->64, BN, Linear(64*2*2, 10).
    expected = conv(1, 32, bias=True) + bn(32) + conv(32, 64, bias=True) + bn(64) + linear(256, 10)
    assert expected == 21_578
    assert n_params(build_model({"name": "small_cnn"}, (1, 8, 8), 10)) == expected


def test_papers_initialisation_bounds():
    # Kaiming-uniform (fan_in, relu): U(-sqrt(6/fan_in), +sqrt(6/fan_in));
    # Xavier-uniform: U(-sqrt(6/(fan_in+fan_out)), +sqrt(6/(fan_in+fan_out))).
    # PyTorch's default would give bounds 1/sqrt(fan_in), 2.45x narrower for the convs.
    model = build_model(
        {"name": "cnn8"}, (3, 32, 32), 10, generator=torch.Generator().manual_seed(0)
    )
    checked = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            bound = math.sqrt(6 / fan_in)
        elif isinstance(module, nn.Linear):
            bound = math.sqrt(6 / (module.in_features + module.out_features))
        else:
            continue
        weight = module.weight.detach()
        assert weight.abs().max() <= bound
        assert weight.abs().max() >= 0.95 * bound  # >= 1,728 draws: P(all below) < 0.95**1728
        assert weight.var().item() == pytest.approx(bound**2 / 3, rel=0.1)
        # Biases keep PyTorch's default U(-1/sqrt(fan_in), +).
        assert module.bias.abs().max() <= 1 / math.sqrt(module.weight[0].numel())
        checked += 1
    assert checked == 8
    batch_norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in batch_norms)


def test_generator_makes_the_initialisation_reproducible():
    def build(seed):
        return build_model(
            {"name": "small_cnn"}, (1, 8, 8), 10, generator=torch.Generator().manual_seed(seed)
        )

    first, again, other = build(3).state_dict(), build(3).state_dict(), build(4).state_dict()
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["0.0.weight"], other["0.0.weight"])
    assert not torch.equal(first["0.0.bias"], other["0.0.bias"])


@pytest.mark.parametrize(
    "name, input_shape, accepts",
    [
        ("cnn4", (3, 32, 32), r"\(C,28,28\)"),
        ("cnn8", (1, 28, 28), r"\(C,32,32\)"),
        ("resnet18", (3, 64, 64), r"\(C,32,32\)"),
    ],
)
def test_shape_mismatch_is_a_config_error_naming_model_and_shapes(name, input_shape, accepts):
    with pytest.raises(
        ConfigError, match=rf"'{name}'.*{tuple(input_shape)}.*accepts {accepts}"
    ) as error:
        build_model({"name": name}, input_shape, 10)
    assert "\n" not in str(error.value)


def test_bad_names_and_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown model 'cnn5'.*registered: cnn4, cnn8"):
        build_model({"name": "cnn5"}, (1, 28, 28), 10)
    with pytest.raises(
        ConfigError, match="unknown option.*width for model 'cnn4'; allowed keys: name$"
    ):
        build_model({"name": "cnn4", "width": 2}, (1, 28, 28), 10)
    with pytest.raises(ConfigError, match="allowed keys: name, widths, pooled_size"):
        build_model({"name": "small_cnn", "depth": 2}, (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="widths must be a non-empty list of positive integers"):
        build_model({"name": "small_cnn", "widths": [16, 0]}, (1, 8, 8), 10)


def test_every_model_yaml_builds_and_names_its_registry_entry():
    files = sorted(MODEL_CONF.glob("*.yaml"))
    assert [f.stem for f in files] == MODELS.names()
    for file in files:
        cfg = OmegaConf.load(file)
        assert cfg.name == file.stem
        model = build_model(cfg, PAPER_INPUT[cfg.name], 10)
        assert model(torch.zeros(2, *PAPER_INPUT[cfg.name])).shape == (2, 10)


@pytest.mark.parametrize("name", ["small_cnn", "cnn4", "resnet18"])
def test_channels_last_and_bf16_autocast(name):
    shape = PAPER_INPUT[name]
    model = build_model({"name": name}, shape, 10).to(memory_format=torch.channels_last)
    images = torch.randn(4, *shape, generator=torch.Generator().manual_seed(0))
    reference = model(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images.contiguous(memory_format=torch.channels_last))
    assert logits.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa: logits agree to about 1%.
    assert torch.allclose(logits.float(), reference, rtol=0.05, atol=0.05)
    logits.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
