"""``build_loss``: resolve a loss config (explicit value > paper preset > default) and build it."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from noisybench.registry import ConfigError

from .base import LOSSES, NON_NEGATIVE, Loss, TrainingSettings
from .custom import CUSTOM, custom_name, probe, resolve_custom
from .presets import preset_values


def _as_dict(cfg_loss: Any) -> dict[str, Any]:
    if isinstance(cfg_loss, DictConfig):
        return OmegaConf.to_container(cfg_loss, resolve=True)  # type: ignore[return-value]
    if isinstance(cfg_loss, Mapping):
        return dict(cfg_loss)
    raise ConfigError(f"loss config must be a mapping with a 'name' key, got {cfg_loss!r}")


def loss_options(name: str) -> tuple[str, ...]:
    """The keys a loss's YAML may set besides ``name``."""
    return ("preset", "weight_decay") + LOSSES.meta(name)["params"]


def _weight_decay(name: str, value: Any) -> float | None:
    if value is None:
        return None
    NON_NEGATIVE(name, "weight_decay", value)
    return float(value)


def build_loss(cfg_loss: Any, num_classes: int, dataset: str | None = None, noise: str | None = None,
               rate: float | None = None) -> Loss:
    """The loss of ``resolve_loss``, without its training settings."""
    return resolve_loss(cfg_loss, num_classes, dataset, noise, rate)[0]


def resolve_loss(cfg_loss: Any, num_classes: int, dataset: str | None = None, noise: str | None = None,
                 rate: float | None = None, probe: bool = True) -> tuple[Loss, TrainingSettings]:
    """Validate ``cfg_loss``; the loss and the training settings that come with it.

    A hyperparameter that is null in the config comes from ``preset`` for (loss, dataset,
    noise, rate) when a preset is set and has it, else from the loss's documented default.
    ``loss.params`` records every resolved value. ``probe``: run a user's own loss once on a
    probe batch (off where only its resolved values are wanted).
    """
    options = _as_dict(cfg_loss)
    name = options.get("name")
    if name is None:
        raise ConfigError(f"loss config has no 'name'; registered: {', '.join(LOSSES.names())}, or custom")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes={num_classes!r} is not allowed for a loss; it must be an integer >= 2")
    if name == CUSTOM:
        return build_custom(options, num_classes, probe)
    LOSSES.get(name)  # an unknown name: one line, with "did you mean"
    options.pop("name")
    allowed = loss_options(name)
    for key in options:
        if key not in allowed:
            hint = " (loss.fn is for loss=custom)" if key == "fn" else ""
            raise ConfigError(f"loss {name} has no option '{key}'{hint}; allowed: {', '.join(allowed)}")
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
    weight_decay = _weight_decay(target, resolved.pop("weight_decay"))
    for key, value in resolved.items():
        check = meta["checks"][key]
        if check is not None:
            check(target, key, value)
    settings = {k: resolved[k] for k in meta["settings"]}
    hyperparameters = {k: v for k, v in resolved.items() if k not in meta["settings"]}
    params = {"preset": preset, **({"run_as": run_as} if run_as else {}), **resolved, "weight_decay": weight_decay}
    loss = Loss(name, LOSSES.get(target), hyperparameters, batch=meta["batch"], params=params,
                batch_size_warning=meta["batch_size_warning"], num_classes=num_classes)
    return loss, TrainingSettings(weight_decay=weight_decay, l1=float(settings.get("delta", 0.0)),
                                  warmup_epochs=int(settings.get("warmup_epochs", 0)), lr=settings.get("lr"))


def build_custom(options: dict[str, Any], num_classes: int, run_probe: bool) -> tuple[Loss, TrainingSettings]:
    """A user's function (``loss=custom loss.fn=module:function``), imported, checked and probed."""
    fn, hyperparameters = resolve_custom(options)
    spec = options["fn"]
    if run_probe:
        probe(fn, hyperparameters, num_classes, spec)
    weight_decay = _weight_decay(spec, options.get("weight_decay"))
    params = {"fn": spec, **hyperparameters, "weight_decay": weight_decay}
    return Loss(custom_name(spec, fn), fn, hyperparameters, params=params), TrainingSettings(weight_decay=weight_decay)
