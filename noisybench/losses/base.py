"""The loss table, the ``Loss`` base class, hyperparameter checks and the softmax-term engine.

A loss is registered with ``@register_loss(name, family=..., bounded=..., papers=..., **checks)``
on a builder function whose keyword arguments are the loss's hyperparameters (their defaults are
the documented defaults) and whose result is a ``Loss``. ``checks`` gives one validator per
keyword argument; ``build_loss`` runs them before the builder, so a bad value fails at config
time with one line.

Most losses are weighted sums of per-sample *terms* of the softmax. Each term returns its value
and its gradient with respect to ``log p`` (``h``); ``SoftmaxLoss`` evaluates all terms of a loss
in one autograd node whose backward is the log-softmax chain rule
``dL/dz = h - p * sum_k h_k``. One node instead of a dozen keeps every loss within a small
factor of ``F.cross_entropy`` on CPU, and writing ``h`` by hand makes the detached terms and the
clamps of the official code explicit (a clamped entry has zero gradient, a detached weight is a
constant).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from noisybench.registry import ConfigError, Registry

LOSSES = Registry("loss")

FAMILIES = ("active", "passive", "symmetric", "asymmetric", "combined")


# ---------------------------------------------------------------------------------------------
# Hyperparameter checks
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


NON_NEGATIVE = Real(0.0)
POSITIVE = Real(0.0, bounds="(]")
# Clamp floors of the official code (1e-7 or 1e-8); 0 turns the clamp off where a log is not taken.
CLAMP = Real(0.0, 1.0, "[)")
LOG_CLAMP = Real(0.0, 1.0, "()")


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------

def register_loss(name: str, *, family: str, bounded: bool, papers: Sequence[str],
                  weight_decay: float | None = None, **checks: Check) -> Callable:
    """Register a builder ``fn(num_classes, **hyperparameters) -> Loss``.

    ``weight_decay`` is the loss's own default for the optimiser's L2 weight decay (None: the
    trainer's). The metadata ``params`` lists the builder's hyperparameters, read from its
    signature so that the table and the code cannot disagree.
    """
    if family not in FAMILIES:
        raise ValueError(f"loss {name}: family {family!r} is not one of {FAMILIES}")

    def wrap(fn: Callable) -> Callable:
        params = tuple(p for p in inspect.signature(fn).parameters if p != "num_classes")
        if set(params) != set(checks):
            raise ValueError(f"loss {name}: checks {sorted(checks)} do not match params {sorted(params)}")
        defaults = {p: inspect.signature(fn).parameters[p].default for p in params}
        LOSSES.register(name, family=family, bounded=bounded, params=params, papers=tuple(papers),
                        checks=checks, defaults=defaults, weight_decay=weight_decay)(fn)
        return fn

    return wrap


# ---------------------------------------------------------------------------------------------
# The Loss base class
# ---------------------------------------------------------------------------------------------

def l1_norm(model: torch.nn.Module) -> torch.Tensor:
    """sum |theta| over all parameters, BatchNorm and biases included (ANL's and JAL's L1)."""
    return sum(p.abs().sum() for p in model.parameters())


class Loss(torch.nn.Module):
    """Base of every registered loss. ``loss(logits, labels)`` returns the batch mean.

    ``needs_model``: the trainer passes ``model=`` (losses with an L1 term ``l1 * sum|theta|``,
    ANL's and JAL's ``delta``; true exactly when ``l1 > 0``). ``per_sample``: False when the value
    depends on the whole batch. ``weight_decay``: None keeps the trainer's L2 weight decay, a
    number replaces it. ``params``: the resolved hyperparameters, recorded with the run.
    """

    needs_model = False
    per_sample = True

    def __init__(self, l1: float = 0.0):
        super().__init__()
        self.l1 = float(l1)
        self.needs_model = self.l1 > 0
        self.weight_decay: float | None = None
        self.params: dict[str, Any] = {}

    def values(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample losses [N] (differentiable); ``forward`` is their mean plus the L1 term."""
        raise TypeError(f"{type(self).__name__} depends on the whole batch; it has no per-sample values")

    def batch_value(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.values(logits, labels).mean()

    def forward(self, logits: torch.Tensor, labels: torch.Tensor,
                model: torch.nn.Module | None = None) -> torch.Tensor:
        value = self.batch_value(as_float(logits), labels)
        if self.l1 > 0:
            if model is None:
                raise ValueError(f"{type(self).__name__} has an L1 term (delta={self.l1:g}); "
                                 "call it as loss(logits, labels, model=model)")
            value = value + self.l1 * l1_norm(model)
        return value

    def stage_lr(self, epoch: int) -> float | None:
        return None

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params.items())


def as_float(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are upcast: clamps such as 1e-8 do not exist in bf16/fp16."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


# ---------------------------------------------------------------------------------------------
# Softmax terms
# ---------------------------------------------------------------------------------------------

class Batch:
    """Softmax statistics of one batch, computed on first use and shared by all terms of a loss.

    ``p`` is ``softmax(z)`` and ``logp`` is ``log_softmax(z)`` (computed only when a term needs
    it), as the official code computes each.
    """

    def __init__(self, logits: torch.Tensor, labels: torch.Tensor):
        self.logits = logits
        self.labels = labels
        self.index = labels.unsqueeze(1)
        self.num_classes = logits.shape[1]
        self._focal: dict[float, torch.Tensor] = {}

    @cached_property
    def p(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=1)

    @cached_property
    def logp(self) -> torch.Tensor:
        return torch.log_softmax(self.logits, dim=1)

    def focal_weights(self, gamma: float) -> torch.Tensor:
        """``(1 - p)^gamma`` (0^0 = 1), shared by the focal terms of one loss."""
        if gamma not in self._focal:
            self._focal[gamma] = (1 - self.p).pow_(gamma)
        return self._focal[gamma]

    @cached_property
    def p_y(self) -> torch.Tensor:
        return self.at_label(self.p)

    @cached_property
    def logp_y(self) -> torch.Tensor:
        return self.at_label(self.logp)

    def at_label(self, x: torch.Tensor) -> torch.Tensor:
        """x[n, y_n] for a [N, K] tensor."""
        return x.gather(1, self.index).squeeze(1)


class TermOut(NamedTuple):
    """One term's per-sample value and its gradient with respect to ``log p``, both already
    multiplied by the weight the term was called with.

    The gradient is ``h_label * e_y + h_row * 1 + h_dense``: ``h_label`` and ``h_row`` are [N]
    (a coefficient on the label's column, one shared by every column), ``h_dense`` is [N, K];
    None stands for 0. Keeping the structured parts as [N] vectors saves [N, K] operations.
    """

    value: torch.Tensor
    h_label: torch.Tensor | None = None
    h_dense: torch.Tensor | None = None
    h_row: torch.Tensor | None = None


Term = Callable[["Batch", float], TermOut]


def above(x: torch.Tensor, floor: float) -> torch.Tensor:
    """x where x > floor, else 0: x times the gradient mask of ``clamp(x, min=floor)``."""
    return F.threshold(x, floor, 0.0) if floor > 0 else x


def _add(total: torch.Tensor | None, part: torch.Tensor | None) -> torch.Tensor | None:
    """total + part, out of place (a part may be a tensor the batch still uses)."""
    if part is None:
        return total
    return part if total is None else total + part


class _SoftmaxTerms(torch.autograd.Function):
    """Forward: the weighted terms, per sample or summed (``reduce``: the weights already hold
    the 1/N of the mean). Backward: ``dL/dz = h - p * sum_k h_k``."""

    @staticmethod
    def forward(ctx, logits, labels, terms, reduce):
        batch = Batch(logits, labels)
        scale = 1 / logits.shape[0] if reduce else 1.0
        value = h_label = h_dense = h_row = None
        for weight, term in terms:
            out = term(batch, weight * scale)
            value = _add(value, out.value)
            h_label = _add(h_label, out.h_label)
            h_dense = _add(h_dense, out.h_dense)
            h_row = _add(h_row, out.h_row)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(batch.p, batch.index, h_label, h_dense, h_row)
        return value.sum() if reduce else value

    @staticmethod
    def backward(ctx, grad_value):
        p, index, h_label, h_dense, h_row = ctx.saved_tensors
        if grad_value.dim() == 1:  # per-sample values
            grad_value = grad_value.unsqueeze(1)
        total = h_label if h_dense is None else _add(h_label, h_dense.sum(1))
        if h_row is not None:
            total = _add(total, h_row * p.shape[1])
            h_dense = h_row.unsqueeze(1) if h_dense is None else h_dense + h_row.unsqueeze(1)
        if h_dense is None:
            grad = p * (-total).unsqueeze(1)
        else:  # h_dense may be [N, 1]: addcmul broadcasts it
            grad = torch.addcmul(h_dense, p, (-total).unsqueeze(1))
        if h_label is not None:
            grad.scatter_add_(1, index, h_label.unsqueeze(1))
        return grad.mul_(grad_value), None, None, None


class SoftmaxLoss(Loss):
    """``sum_i weight_i * term_i`` of the softmax, per sample, in one autograd node.

    Terms with weight 0 (e.g. ALFs' MNIST NCE+AGCE with alpha = 0) are not evaluated.
    """

    def __init__(self, terms: Sequence[tuple[float, Term]], l1: float = 0.0):
        super().__init__(l1)
        self.terms = tuple((float(w), t) for w, t in terms if w != 0)

    def _evaluate(self, logits: torch.Tensor, labels: torch.Tensor, reduce: bool) -> torch.Tensor:
        if not self.terms:  # every weight is 0
            zero = logits.sum(1) * 0.0
            return zero.mean() if reduce else zero
        return _SoftmaxTerms.apply(as_float(logits), labels, self.terms, reduce)

    def values(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._evaluate(logits, labels, reduce=False)

    def batch_value(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._evaluate(logits, labels, reduce=True)
