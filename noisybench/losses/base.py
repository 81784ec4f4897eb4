"""The loss table and the ``Loss`` module a run trains with.

A loss is a plain PyTorch function ``fn(logits [N, K], labels [N], **hyperparameters)`` that
returns the per-sample values [N]; autograd derives its gradient. Registering it is one
decorator, as timm's ``@register_model``::

    @register_loss(family="active", bounded=True, papers=[papers.GCE, papers.APL], q=Real(0, 1, "(]"))
    def gce(logits, labels, q=0.7, eps=1e-7):
        p = F.softmax(logits, dim=1).clamp(min=eps, max=1.0)
        return (1 - at_label(p, labels) ** q) / q

The name is the function's; the hyperparameters and their defaults are its keyword arguments.
A range check (``q=Real(...)``) is optional: a hyperparameter without one only has to be of its
default's type. A loss whose value depends on the whole batch (L_DMI) returns one value and is
registered with ``batch=True``.

Some papers pair a loss with training settings: an L1 term ``delta * sum|theta|`` instead of L2
weight decay (ANL, JAL: ``weight_decay=0.0, settings={"delta": ...}``), or a CE warm-up followed
by a fixed learning rate (L_DMI: ``settings={"warmup_epochs": ..., "lr": ...}``). They are
resolved with the hyperparameters (a preset may set them) into ``TrainingSettings``, which the
trainer applies; the function never sees them.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from noisybench.registry import ConfigError, Registry

LOSSES = Registry("loss")

FAMILIES = ("active", "passive", "symmetric", "asymmetric", "combined", "custom")


# ---------------------------------------------------------------------------------------------
# Hyperparameter checks (optional metadata of a registration)
# ---------------------------------------------------------------------------------------------

class Check:
    """A validator for one hyperparameter; ``describe()`` says what is allowed."""

    def __call__(self, loss: str, key: str, value: Any) -> None:
        if not self.accepts(value):
            raise ConfigError(f"loss.{key}={value!r} is not allowed for {loss}; {self.describe()}")

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Real(Check):
    """A finite real number in an interval; ``bounds`` is "[]", "(]", "[)" or "()"."""

    low: float = -math.inf
    high: float = math.inf
    bounds: str = "[]"

    def accepts(self, value: Any) -> bool:
        if not _is_real(value):
            return False
        above = value > self.low if self.bounds[0] == "(" else value >= self.low
        below = value < self.high if self.bounds[1] == ")" else value <= self.high
        return above and below

    def describe(self) -> str:
        if self.low == -math.inf and self.high == math.inf:
            return "it must be a finite number"
        if self.high == math.inf:
            return f"it must be a number {'>' if self.bounds[0] == '(' else '>='} {self.low:g}"
        return f"it must be a number in {self.bounds[0]}{self.low:g}, {self.high:g}{self.bounds[1]}"


@dataclass(frozen=True)
class Integer(Check):
    low: int = 0

    def accepts(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= self.low

    def describe(self) -> str:
        return f"it must be an integer >= {self.low}"


@dataclass(frozen=True)
class Choice(Check):
    options: tuple[str, ...]

    def accepts(self, value: Any) -> bool:
        return value in self.options

    def describe(self) -> str:
        return f"choose one of: {', '.join(self.options)}"


@dataclass(frozen=True)
class OfType(Check):
    """The check of a hyperparameter registered without one: its default's type."""

    kind: type

    def accepts(self, value: Any) -> bool:
        if self.kind is float:
            return _is_real(value)
        return isinstance(value, self.kind) and (self.kind is bool or not isinstance(value, bool))

    def describe(self) -> str:
        return "it must be a finite number" if self.kind is float else f"it must be a {self.kind.__name__}"


def default_check(default: Any) -> Check | None:
    """What a hyperparameter without a registered check must be, read from its default."""
    if isinstance(default, bool):
        return OfType(bool)
    if isinstance(default, int):
        return OfType(int)
    if isinstance(default, float):
        return OfType(float)
    if isinstance(default, str):
        return OfType(str)
    return None


NON_NEGATIVE = Real(0.0)
POSITIVE = Real(0.0, bounds="(]")
# Clamp floors of the official code (1e-7 or 1e-8); 0 turns the clamp off where a log is not taken.
CLAMP = Real(0.0, 1.0, "[)")
LOG_CLAMP = Real(0.0, 1.0, "()")

# The training settings a loss may carry (see the module docstring), with their checks.
SETTINGS = {"delta": NON_NEGATIVE, "warmup_epochs": Integer(0), "lr": POSITIVE}


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------

def signature_defaults(fn: Callable, owner: str) -> dict[str, Any]:
    """The hyperparameters of a loss function and their defaults (``inspect.Parameter.empty``
    where it has none): every parameter after ``logits`` and ``labels``. ValueError, naming the
    function, when its signature is not ``fn(logits, labels, **hyperparameters)``."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError) as e:
        raise ValueError(f"{owner} has no signature to read: {e}") from None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(parameters) < 2 or any(p.kind not in positional for p in parameters[:2]):
        raise ValueError(f"{owner} must take (logits, labels, **hyperparameters) as its first two arguments")
    hyper = {}
    for p in parameters[2:]:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY):
            raise ValueError(f"{owner}: its hyperparameter '{p.name}' must be a named keyword argument "
                             "(no *args, **kwargs or positional-only parameters)")
        hyper[p.name] = p.default
    return hyper


def register_loss(*, family: str, bounded: bool, papers: Sequence[str], batch: bool = False,
                  weight_decay: float | None = None, settings: Mapping[str, Any] | None = None,
                  batch_size_warning: Callable[[int, int], str | None] | None = None,
                  **checks: Check) -> Callable:
    """Register ``fn(logits, labels, **hyperparameters)`` under its own name.

    ``checks``: optional validators of some hyperparameters. ``weight_decay``: the L2 weight
    decay the loss's papers train it with (None: the trainer's). ``settings``: its training
    settings (``SETTINGS``) and their defaults. ``batch_size_warning(batch_size, num_classes)``:
    what goes wrong with this loss at that batch size, if anything (the run logs it).
    """
    if family not in FAMILIES:
        raise ValueError(f"family {family!r} is not one of {FAMILIES}")

    def wrap(fn: Callable) -> Callable:
        name = fn.__name__
        defaults = signature_defaults(fn, f"loss {name}")
        missing = [k for k, v in defaults.items() if v is inspect.Parameter.empty]
        unknown = set(checks) - set(defaults) - set(settings or {})
        if missing or unknown or set(settings or {}) - set(SETTINGS):
            raise ValueError(f"loss {name}: every hyperparameter needs a default ({missing}), checks "
                             f"must name hyperparameters ({sorted(unknown)}), settings must be in {list(SETTINGS)}")
        every = {**defaults, **(settings or {})}
        LOSSES.register(name, family=family, bounded=bounded, papers=tuple(papers), batch=batch,
                        params=tuple(every), defaults=every, settings=tuple(settings or ()),
                        checks={k: checks.get(k) or SETTINGS.get(k) or default_check(v) for k, v in every.items()},
                        weight_decay=weight_decay, batch_size_warning=batch_size_warning)(fn)
        return fn

    return wrap


# ---------------------------------------------------------------------------------------------
# Helpers the loss functions share
# ---------------------------------------------------------------------------------------------

def at_label(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``x[n, labels[n]]`` for [N, K] x: [N] (what the official code's ``sum(one_hot * x, 1)`` is)."""
    return x.gather(1, labels.unsqueeze(1)).squeeze(1)


def one_hot(labels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The labels one-hot, in ``like``'s [N, K] shape and dtype (``F.one_hot`` reads the labels
    back to the host to check them, which would make a GPU step wait)."""
    return torch.zeros_like(like).scatter_(1, labels.unsqueeze(1), 1.0)


# ---------------------------------------------------------------------------------------------
# The built loss and the training settings that come with it
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainingSettings:
    """What a loss's papers train it with besides the loss, resolved with its hyperparameters
    (explicit value > paper preset > registration) and applied by the trainer to its cell.

    ``weight_decay``: the optimiser's L2 weight decay (None: ``trainer.weight_decay``). ``l1``:
    the weight of an L1 term ``l1 * sum|theta|`` over all parameters (ANL's and JAL's ``delta``),
    added to ``trainer.l1``. ``warmup_epochs`` and ``lr``: CE for the first epochs at the
    schedule's learning rate, then the loss at this fixed learning rate (L_DMI's protocol);
    ``lr`` None: no such stages.
    """

    weight_decay: float | None = None
    l1: float = 0.0
    warmup_epochs: int = 0
    lr: float | None = None

    @property
    def staged(self) -> bool:
        return self.lr is not None

    def in_warmup(self, epoch: int) -> bool:
        return self.staged and epoch < self.warmup_epochs

    def fixed_lr(self, epoch: int) -> float | None:
        """The learning rate of ``epoch``'s stage; None where the schedule's."""
        return self.lr if self.staged and epoch >= self.warmup_epochs else None


class Loss(torch.nn.Module):
    """A loss function with its resolved hyperparameters; ``loss(logits, labels)`` is the batch
    mean (a batch-level loss's value as it is), ``values`` the per-sample values (``per_sample``:
    False for a batch-level loss). ``params``: every resolved value, recorded with the run."""

    def __init__(self, name: str, fn: Callable, hyperparameters: Mapping[str, Any], *, batch: bool = False,
                 params: Mapping[str, Any] | None = None,
                 batch_size_warning: Callable[[int, int], str | None] | None = None, num_classes: int = 0):
        super().__init__()
        self.name, self.fn, self.hyperparameters = name, fn, dict(hyperparameters)
        self.function = fn  # ``compile`` replaces ``fn``; this stays the registered (or user's) function
        self.per_sample = not batch
        self.params = dict(params or hyperparameters)
        self._warning, self.num_classes = batch_size_warning, num_classes

    def values(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample losses [N] (differentiable)."""
        if not self.per_sample:
            raise TypeError(f"{self.name} depends on the whole batch; it has no per-sample values")
        return self.fn(as_float(logits), labels, **self.hyperparameters)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        value = self.fn(as_float(logits), labels, **self.hyperparameters)
        return value.mean() if self.per_sample else value

    def compile(self) -> None:
        """Fuse the function's kernels with ``torch.compile`` (``trainer.compile=true``); static
        shapes: a batch size is one graph, an epoch's short last batch one more."""
        if self.fn is self.function:
            self.fn = torch.compile(self.function, dynamic=False)

    def batch_size_warning(self, batch_size: int) -> str | None:
        """What goes wrong with this loss at ``batch_size``, if anything (the run logs it)."""
        return None if self._warning is None else self._warning(batch_size, self.num_classes)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params.items())


def as_float(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are upcast: clamps such as 1e-8 do not exist in bf16/fp16."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
