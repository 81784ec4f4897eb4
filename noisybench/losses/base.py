"""The loss table, the ``Loss`` base class, hyperparameter checks and the softmax-term engine.

A loss is registered with ``@register_loss(name, family=..., bounded=..., papers=..., **checks)``
on a builder function whose keyword arguments are the loss's hyperparameters (their defaults are
the documented defaults) and whose result is a ``Loss``. ``checks`` gives one validator per
keyword argument; ``build_loss`` runs them before the builder, so a bad value fails at config
time with one line.

Most losses are weighted sums of per-sample *terms* of the softmax. Each term adds its value and
its gradient with respect to ``log p`` (``h``) to a ``Batch``; ``SoftmaxLoss`` turns ``h`` into
the logit gradient with the log-softmax chain rule ``dL/dz = h - p * sum_k h_k``. The value and
the gradient are computed together, once, in a single autograd node (``HandWritten``): at a
batch of 128 x 100 an elementwise op costs about as much as its dispatch, so a loss spelled
out in autograd ops (a dozen nodes forward and backward) is several times slower than
``F.cross_entropy``, while one node with a few fused ops stays within a small factor. Writing
``h`` by hand also makes the detached terms and the clamps of the official code explicit: a
clamped entry has zero gradient (as ``torch.clamp`` gives it), a detached weight is a constant.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

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


class _HandWritten(torch.autograd.Function):
    """One autograd node for a loss that computes its own logit gradient (``evaluate``)."""

    @staticmethod
    def forward(ctx, logits, labels, loss, reduce):
        value, grad = loss.evaluate(logits, labels, reduce, ctx.needs_input_grad[0])
        # An attribute, not save_for_backward: ``grad`` is no input or output that could be
        # modified in place, and skipping the saved-tensor checks is measurably faster here.
        ctx.grad = grad
        ctx.scale = 1 / len(logits) if reduce and loss.per_sample else 1.0
        return value

    @staticmethod
    def backward(ctx, grad_value):
        grad = ctx.grad
        if grad_value.dim() == 0:  # the batch mean (``grad`` is that of the sum) or a batch value
            return grad * (grad_value * ctx.scale if ctx.scale != 1 else grad_value), None, None, None
        return grad * grad_value.unsqueeze(1), None, None, None


class HandWrittenLoss(Loss):
    """A loss whose ``evaluate`` returns its value and, when asked, its logit gradient.

    ``evaluate(logits, labels, reduce, need_grad) -> (value, grad or None)``: the batch mean
    (``reduce``) or the per-sample values [N], and the gradient of the per-sample values' sum
    (of the value itself when ``per_sample`` is False).
    """

    def evaluate(self, logits: torch.Tensor, labels: torch.Tensor, reduce: bool,
                 need_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def values(self, logits, labels):
        if not self.per_sample:
            return super().values(logits, labels)
        return _HandWritten.apply(as_float(logits), labels, self, False)

    def batch_value(self, logits, labels):
        return _HandWritten.apply(logits, labels, self, True)


# ---------------------------------------------------------------------------------------------
# Softmax terms
# ---------------------------------------------------------------------------------------------

class WeightedSum:
    """``weight * tensor``, kept unscaled: adding ``w * x`` is one ``add_`` with
    ``alpha = w / weight``, so that the scalar weights of the terms cost no op of their own."""

    __slots__ = ("tensor", "weight", "owned")

    def __init__(self):
        self.tensor: torch.Tensor | None = None
        self.weight = 1.0
        self.owned = False

    def add(self, x: torch.Tensor, weight: float, owned: bool) -> None:
        """``owned``: x is a temporary of the caller's, which the sum may keep and modify (a
        cached statistic is not)."""
        if weight == 0:
            return
        if self.tensor is None:
            self.tensor, self.weight, self.owned = x, weight, owned
        elif self.owned:
            self.tensor.add_(x, alpha=weight / self.weight)
        else:
            self.tensor, self.owned = torch.add(self.tensor, x, alpha=weight / self.weight), True

    def scaled(self) -> torch.Tensor:
        """``weight * tensor`` as a tensor the caller may modify."""
        if self.weight == 1:
            return self.tensor if self.owned else self.tensor.clone()
        if self.weight == -1:
            return self.tensor.neg_() if self.owned else self.tensor.neg()
        return self.tensor.mul_(self.weight) if self.owned else self.tensor * self.weight


class Batch:
    """Softmax statistics of one batch (computed on first use, shared by the terms of a loss)
    and the value and gradient the terms add up.

    ``p`` is ``softmax(z)`` and ``logp`` is ``log_softmax(z)`` (only computed when a term needs
    it), as the official code computes each; ``p_y`` and ``logp_y`` are their label entries,
    [N, 1]. A term adds its weighted per-sample value and, when ``need_grad``, its gradient with
    respect to ``log p``, ``h = label * e_y + row * 1 + dense``; ``value_const`` and
    ``label_const`` hold the parts that are the same for every sample. The statistics are
    shared: terms never modify them in place, and pass them with ``owned=False``.
    """

    def __init__(self, logits: torch.Tensor, labels: torch.Tensor, need_grad: bool):
        self.logits = logits
        self.index = labels.unsqueeze(1)
        self.num_classes = logits.shape[1]
        self.need_grad = need_grad
        self._p = self._logp = self._p_y = self._logp_y = None
        self._focal: dict[float, torch.Tensor] = {}
        self.value, self.label, self.row, self.dense = WeightedSum(), WeightedSum(), WeightedSum(), WeightedSum()
        self.value_const = self.label_const = 0.0

    # Plain lazy properties: functools.cached_property takes a lock on every first access.
    @property
    def p(self) -> torch.Tensor:
        if self._p is None:
            self._p = torch.softmax(self.logits, dim=1)
        return self._p

    @property
    def logp(self) -> torch.Tensor:
        if self._logp is None:
            self._logp = torch.log_softmax(self.logits, dim=1)
        return self._logp

    @property
    def p_y(self) -> torch.Tensor:
        if self._p_y is None:
            self._p_y = self.at_label(self.p)
        return self._p_y

    @property
    def logp_y(self) -> torch.Tensor:
        if self._logp_y is None:
            self._logp_y = self.at_label(self.logp)
        return self._logp_y

    def at_label(self, x: torch.Tensor) -> torch.Tensor:
        """x[n, y_n] as [N, 1] for a [N, K] tensor."""
        return x.gather(1, self.index)

    def focal_weights(self, gamma: float) -> torch.Tensor:
        """``(1 - p)^gamma`` (0^0 = 1), shared by the focal terms of one loss."""
        if gamma not in self._focal:
            self._focal[gamma] = torch.rsub(self.p, 1.0).pow_(gamma)
        return self._focal[gamma]

    def add_value(self, x: torch.Tensor, weight: float, owned: bool = False) -> None:
        self.value.add(x, weight, owned)

    def add_label(self, x: torch.Tensor, weight: float, owned: bool = False) -> None:
        self.label.add(x, weight, owned)

    def add_row(self, x: torch.Tensor, weight: float, owned: bool = False) -> None:
        self.row.add(x, weight, owned)

    def add_dense(self, x: torch.Tensor, weight: float, owned: bool = False) -> None:
        self.dense.add(x, weight, owned)

    def total_value(self, reduce: bool) -> torch.Tensor:
        """The batch mean or the per-sample values [N]."""
        value = self.value
        if value.tensor is None:
            zero = self.logits.new_zeros(())
            return zero + self.value_const if reduce else zero.expand(len(self.logits)) + self.value_const
        if reduce:
            total = value.tensor.mean() if value.weight == 1 else value.tensor.sum() * (value.weight / len(value.tensor))
        else:
            total = value.scaled().squeeze(1)
        return total + self.value_const if self.value_const else total

    def gradient(self) -> torch.Tensor:
        """``d (sum of the values) / dz = h - p * sum_k h_k`` for ``h = label * e_y + row + dense``."""
        p = self.p
        label = self.label.scaled() if self.label.tensor is not None else None
        if self.label_const:
            label = torch.full_like(self.index, self.label_const, dtype=p.dtype) if label is None \
                else label.add_(self.label_const)
        row = self.row.scaled() if self.row.tensor is not None else None
        dense = self.dense
        total = label  # sum_k h_k; ``label`` itself is kept for the scatter below
        if row is not None:
            total = row * self.num_classes if total is None else torch.add(total, row, alpha=self.num_classes)
        if dense.tensor is not None:
            row_sums = dense.tensor.sum(1, keepdim=True)
            if total is None:
                total = row_sums.mul_(dense.weight) if dense.weight != 1 else row_sums
            elif total is label:
                total = torch.add(total, row_sums, alpha=dense.weight)
            else:
                total.add_(row_sums, alpha=dense.weight)
        if row is not None:
            grad = torch.addcmul(row, p, total, value=-1)
            if dense.tensor is not None:
                grad.add_(dense.tensor, alpha=dense.weight)
        elif dense.tensor is not None:
            grad = dense.scaled().addcmul_(p, total, value=-1)
        else:
            grad = p * total.neg()
        if label is not None:
            grad.scatter_add_(1, self.index, label)
        return grad


Term = Callable[[Batch, float], None]


class SoftmaxLoss(HandWrittenLoss):
    """``sum_i weight_i * term_i`` of the softmax, per sample.

    Terms with weight 0 (e.g. ALFs' MNIST NCE+AGCE with alpha = 0) are not evaluated.
    """

    def __init__(self, terms: Sequence[tuple[float, Term]], l1: float = 0.0):
        super().__init__(l1)
        self.terms = tuple((float(w), t) for w, t in terms if w != 0)

    def evaluate(self, logits, labels, reduce, need_grad):
        batch = Batch(logits, labels, need_grad)
        for weight, term in self.terms:
            term(batch, weight)
        return batch.total_value(reduce), batch.gradient() if need_grad else None

    def values(self, logits, labels):
        if not self.terms:  # every weight is 0
            return logits.sum(1) * 0.0
        return super().values(logits, labels)

    def batch_value(self, logits, labels):
        if not self.terms:
            return logits.sum() * 0.0
        return super().batch_value(logits, labels)
