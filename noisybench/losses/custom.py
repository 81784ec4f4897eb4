"""A user's own loss, from their own file: ``loss=custom loss.fn=mylosses:poly2 +loss.eps1=1.0``.

``loss.fn`` names a function ``fn(logits [N, K], labels [N], **hyperparameters) -> [N]`` as
``module:function`` (a module importable from where the command runs) or
``path/to/file.py:function``; its hyperparameters are the other keys of the loss config
(``+loss.<name>=<value>``), else its defaults. Before any training the function is imported,
its signature read and one probe batch run through it, forward and backward; whatever does
not fit is a ConfigError of one line.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from noisybench.registry import ConfigError

from .base import LOSSES, signature_defaults

CUSTOM = "custom"
# The keys of a custom loss's config besides its function's hyperparameters.
CUSTOM_KEYS = ("name", "fn", "weight_decay")
PROBE_SIZE = 8


def launch_dir() -> Path:
    """Where the command was started (Hydra may run a job elsewhere): user modules live there."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.cwd)
    except Exception:  # no Hydra run: a script, a test
        return Path(os.getcwd())


def load_function(spec: Any) -> Callable:
    """The function ``loss.fn`` names; ConfigError saying what is wrong."""
    where = f"loss.fn={spec!r}"
    if not isinstance(spec, str) or ":" not in spec or not spec.rpartition(":")[2] or not spec.rpartition(":")[0]:
        raise ConfigError(f"{where} is not allowed; name your function as module:function or "
                          "path/to/file.py:function")
    module_name, _, attr = spec.rpartition(":")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            path = path if path.is_absolute() else launch_dir() / path
            if not path.is_file():
                raise ConfigError(f"{where}: there is no file {path}")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            if str(launch_dir()) not in sys.path:
                sys.path.append(str(launch_dir()))
            module = importlib.import_module(module_name)
    except ConfigError:
        raise
    except BaseException as e:  # noqa: BLE001  (whatever the user's module raises, SystemExit included)
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(f"{where}: module {module_name!r} does not import ({type(e).__name__}: {detail})") from None
    fn = getattr(module, attr, None)
    if fn is None:
        names = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_"))
        raise ConfigError(f"{where}: {module_name} defines no {attr!r}; its functions: {', '.join(names) or 'none'}")
    if not callable(fn):
        raise ConfigError(f"{where}: {module_name}.{attr} is a {type(fn).__name__}, not a function")
    return fn


def custom_name(spec: str, fn: Callable) -> str:
    """The loss's name in summaries and the leaderboard: its function's, unless a built-in has it."""
    name = getattr(fn, "__name__", spec)
    return spec if name in LOSSES or name == CUSTOM else name


def resolve_custom(options: dict[str, Any]) -> tuple[Callable, dict[str, Any]]:
    """The function and its hyperparameters (config values over its defaults), checked."""
    spec = options.get("fn")
    fn = load_function(spec)
    try:
        defaults = signature_defaults(fn, f"loss.fn={spec!r}")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    unknown = [k for k in options if k not in CUSTOM_KEYS and k not in defaults]
    if unknown:
        raise ConfigError(f"loss.{unknown[0]} is not a hyperparameter of {spec}; it takes: "
                          f"{', '.join(defaults) or 'none'}")
    given = {k: v for k, v in options.items() if k in defaults and v is not None}
    missing = [k for k, v in defaults.items() if v is inspect.Parameter.empty and k not in given]
    if missing:
        raise ConfigError(f"{spec} needs loss.{missing[0]} (it has no default): add +loss.{missing[0]}=<value>")
    return fn, {**{k: v for k, v in defaults.items() if v is not inspect.Parameter.empty}, **given}


def probe(fn: Callable, hyperparameters: dict[str, Any], num_classes: int, spec: str) -> None:
    """Run one batch of random logits forward and backward: per-sample values [N], finite, with
    a finite gradient that is not zero everywhere."""
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(PROBE_SIZE, num_classes, generator=generator) * 2).requires_grad_()
    labels = torch.arange(PROBE_SIZE) % num_classes
    where = f"loss.fn={spec!r}"
    try:
        values = fn(logits, labels, **hyperparameters)
    except Exception as e:
        detail = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(f"{where} fails on a probe batch of {PROBE_SIZE} x {num_classes} logits "
                          f"({type(e).__name__}: {detail})") from None
    if not isinstance(values, torch.Tensor) or tuple(values.shape) != (PROBE_SIZE,):
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ConfigError(f"{where} returns {shape} for a batch of {PROBE_SIZE}; it must return the per-sample "
                          f"values, shape ({PROBE_SIZE},)")
    if not torch.isfinite(values).all():
        raise ConfigError(f"{where} returns a non-finite value on a probe batch of random logits: {values.tolist()}")
    if not values.requires_grad:
        raise ConfigError(f"{where} has no gradient with respect to the logits (is something detached, or "
                          "computed outside torch?)")
    values.sum().backward()
    grad = logits.grad
    if grad is None or not torch.any(grad != 0):
        raise ConfigError(f"{where} has a zero gradient with respect to the logits on a probe batch of random logits")
    if not torch.isfinite(grad).all():
        raise ConfigError(f"{where} has a non-finite gradient on a probe batch of random logits")
