"""``build_loss``: resolve a loss config (explicit value > paper preset > default) and build it."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from noisybench.registry import ConfigError

from .base import LOSSES, NON_NEGATIVE, Loss
from .presets import preset_values

# Keys every loss config has besides its hyperparameters.
COMMON_KEYS = ("name", "preset", "weight_decay")


def _as_dict(cfg_loss: Any) -> dict[str, Any]:
    if isinstance(cfg_loss, DictConfig):
        return OmegaConf.to_container(cfg_loss, resolve=True)  # type: ignore[return-value]
    if isinstance(cfg_loss, Mapping):
        return dict(cfg_loss)
    raise ConfigError(f"loss config must be a mapping with a 'name' key, got {cfg_loss!r}")


def loss_options(name: str) -> tuple[str, ...]:
    """The keys a loss's YAML may set besides ``name``."""
    return ("preset", "weight_decay") + LOSSES.meta(name)["params"]


def build_loss(cfg_loss: Any, num_classes: int, dataset: str | None = None, noise: str | None = None,
               rate: float | None = None) -> Loss:
    """Validate ``cfg_loss`` and build the loss.

    A hyperparameter that is null in the config comes from ``preset`` for (loss, dataset,
    noise, rate) when a preset is set and has it, else from the loss's documented default.
    ``loss.params`` records every resolved value.
    """
    options = _as_dict(cfg_loss)
    name = options.pop("name", None)
    if name is None:
        raise ConfigError(f"loss config has no 'name'; registered: {', '.join(LOSSES.names())}")
    LOSSES.get(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes={num_classes!r} is not allowed for a loss; it must be an integer >= 2")
    allowed = loss_options(name)
    for key in options:
        if key not in allowed:
            raise ConfigError(f"loss {name} has no option '{key}'; allowed: {', '.join(allowed)}")
    preset = options.pop("preset", None)
    explicit = {k: v for k, v in options.items() if v is not None}
    from_preset = preset_values(preset, name, dataset, noise, rate) if preset is not None else {}

    run_as = from_preset.pop("run_as", None)
    target = run_as or name
    meta = LOSSES.meta(target)
    for key in from_preset:
        if key not in ("weight_decay",) + meta["params"]:
            raise ConfigError(f"loss.preset={preset} sets '{key}', which {target} does not have")
    if run_as is not None:  # the other loss's own constants (e.g. RCE's label_clamp) do not apply
        explicit = {k: v for k, v in explicit.items() if k == "weight_decay" or k in meta["params"]}

    resolved = {**meta["defaults"], "weight_decay": meta["weight_decay"], **from_preset, **explicit}
    weight_decay = resolved.pop("weight_decay")
    if weight_decay is not None:
        NON_NEGATIVE(target, "weight_decay", weight_decay)
    for key, value in resolved.items():
        meta["checks"][key](target, key, value)

    loss = LOSSES.get(target)(num_classes, **resolved)
    loss.weight_decay = None if weight_decay is None else float(weight_decay)
    loss.params = {"preset": preset, **({"run_as": run_as} if run_as else {}), **resolved,
                   "weight_decay": loss.weight_decay}
    return loss
