"""The model table, the papers' initialisation, and ``build_model`` with its config checks."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from noisybench.registry import ConfigError, Registry

MODELS = Registry("model")

# Arguments every builder takes from the dataset rather than from the model's YAML.
DATASET_ARGUMENTS = ("in_channels", "num_classes")


def papers_init_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """The papers' ``_reset_prams``: Kaiming-uniform conv weights (fan_in, relu), Xavier-uniform
    linear weights. Biases and BatchNorm keep PyTorch's defaults; with a generator the biases are
    redrawn from that default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) so that every random number of
    the initialisation comes from the generator and none from the global RNG.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_uniform_(
                module.weight, mode="fan_in", nonlinearity="relu", generator=generator
            )
        elif isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight, generator=generator)
        else:
            continue
        if module.bias is not None and generator is not None:
            fan_in = module.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(module.bias, -bound, bound, generator=generator)
    return model


def model_options(name: str) -> list[str]:
    """The keys a model's YAML may set besides ``name``: its builder's keyword arguments."""
    parameters = inspect.signature(MODELS.get(name)).parameters
    return [key for key in parameters if key not in DATASET_ARGUMENTS]


def _as_dict(cfg_model: Any) -> dict[str, Any]:
    if isinstance(cfg_model, DictConfig):  # lists inside become plain lists too
        return OmegaConf.to_container(cfg_model, resolve=True)  # type: ignore[return-value]
    if isinstance(cfg_model, Mapping):
        return dict(cfg_model)
    raise ConfigError(f"model config must be a mapping with a 'name' key, got {cfg_model!r}")


def check_model(cfg_model: Any) -> tuple[str, dict[str, Any]]:
    """Validate the model's name and option keys (no I/O, no model built); return both."""
    options = _as_dict(cfg_model)
    if "name" not in options:
        raise ConfigError(f"model config has no 'name'; registered: {', '.join(MODELS.names())}")
    name = options.pop("name")
    allowed = model_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for model '{name}'; allowed keys: "
            f"{', '.join(['name', *allowed])}"
        )
    return name, options


def build_model(
    cfg_model: Any,
    input_shape: Sequence[int],
    num_classes: int,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Build ``cfg_model.name`` for images of ``input_shape`` (C, H, W) and ``num_classes``.

    ``generator`` (optional) supplies every random number of the initialisation. A 2-sample
    forward pass checks that the input shape fits; if not, the ConfigError names the model, the
    dataset's shape and the shapes the model accepts.
    """
    name, options = check_model(cfg_model)
    if len(input_shape) != 3 or any(int(size) < 1 for size in input_shape):
        raise ConfigError(
            f"input_shape must be (C, H, W) with positive sizes, got {tuple(input_shape)}"
        )
    if int(num_classes) < 2:
        raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
    shape = tuple(int(size) for size in input_shape)
    model = MODELS.get(name)(in_channels=shape[0], num_classes=int(num_classes), **options)
    papers_init_(model, generator)
    _check_fits(model, name, shape)
    return model


def _check_fits(model: nn.Module, name: str, input_shape: tuple[int, int, int]) -> None:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, *input_shape))
    except RuntimeError as error:
        accepts = MODELS.meta(name).get("input_shapes", "?")
        raise ConfigError(
            f"model '{name}' does not fit dataset input shape {input_shape}; it accepts {accepts}"
        ) from error
    finally:
        model.train(was_training)
