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

import contextlib
import inspect
import math
import types
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

    def batch_size_warning(self, batch_size: int) -> str | None:
        """What goes wrong with this loss at ``batch_size``, if anything (the run logs it)."""
        return None

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params.items())


def as_float(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are upcast: clamps such as 1e-8 do not exist in bf16/fp16."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


# Grad mode is off inside an autograd.Function's forward, yet each op still passes the autograd
# and view / version-counter dispatch layers; dispatching below them saves about 0.15 us an op
# (4-5 us of a 40-op loss). ``evaluate``'s tensors are new and never reach autograd, so nothing
# is lost. The guard is private to torch: without it the ops simply take the long way. A compiled
# ``evaluate`` runs a few fused kernels, with no per-op dispatch for the guard to save.
_BELOW_AUTOGRAD = getattr(torch._C, "_AutoDispatchBelowADInplaceOrView", contextlib.nullcontext)


class _HandWritten(torch.autograd.Function):
    """One autograd node for a loss that computes its own logit gradient (``evaluate``)."""

    @staticmethod
    def forward(ctx, logits, labels, loss, reduce):
        if loss.compiled_evaluate is not None:
            value, grad = loss.compiled_evaluate(logits, labels, reduce, ctx.needs_input_grad[0])
        else:
            with _BELOW_AUTOGRAD():
                value, grad = loss.evaluate(logits, labels, reduce, ctx.needs_input_grad[0])
        # An attribute, not save_for_backward: ``grad`` is no input or output that could be
        # modified in place, and skipping the saved-tensor checks is measurably faster here.
        ctx.grad = grad
        return value

    @staticmethod
    def backward(ctx, grad_value):
        if grad_value.dim():  # per-sample values
            grad_value = grad_value.unsqueeze(1)
        return ctx.grad * grad_value, None, None, None


class HandWrittenLoss(Loss):
    """A loss whose ``evaluate`` returns its value and, when asked, its logit gradient.

    ``evaluate(logits, labels, reduce, need_grad) -> (value, grad or None)``: the batch mean
    (``reduce``) or the per-sample values [N], and the gradient of the batch mean (``reduce``),
    of the per-sample values' sum (not ``reduce``), or of the value itself when ``per_sample``
    is False.

    ``compile_evaluate()`` (``trainer.compile=true``) has ``torch.compile`` fuse ``evaluate``'s
    elementwise ops into a few loops; ``compilable`` is False where ``evaluate`` leaves torch.
    """

    compilable = True
    compiled_evaluate: Callable | None = None

    def compile_evaluate(self) -> None:
        """Run ``evaluate`` through ``torch.compile`` from now on (the same terms, traced whole;
        equal to the eager values up to float rounding). dynamo keeps its graphs per code object
        and tries them one by one on each call, so each loss gets a code object of its own:
        otherwise every loss of a pack would walk the guards of the others' graphs."""
        if not self.compilable or self.compiled_evaluate is not None:
            return
        method = type(self).evaluate
        own = types.FunctionType(method.__code__.replace(), method.__globals__, method.__name__,
                                 method.__defaults__, method.__closure__)
        # Static shapes: a batch size is one graph, and an epoch's short last batch one more.
        self.compiled_evaluate = torch.compile(types.MethodType(own, self), dynamic=False)

    def evaluate(self, logits: torch.Tensor, labels: torch.Tensor, reduce: bool,
                 need_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def values(self, logits, labels):
        if not self.per_sample:
            return super().values(logits, labels)
        return _HandWritten.apply(as_float(logits), labels, self, False)

    def batch_value(self, logits, labels):
        return _HandWritten.apply(logits, labels, self, True)


# exp(x) = 2^(x log2(e)): exp2 takes a third of exp's time here (exp goes to the vector-math
# library's high-accuracy kernel, exp2 to PyTorch's own vectorised one), within float rounding.
LOG2_E = 1 / math.log(2)

_CONSTANTS: dict[tuple[torch.dtype, torch.device], dict[float, torch.Tensor]] = {}


class Constants:
    """Constants as 0-dim tensors of ``like``'s dtype and device, cached: ``c = Constants(x)``,
    then ``x * c(0.5)`` or ``torch.sub(c(1.0), x)``.

    An arithmetic op with a Python number (``x * 0.5``, ``1 - x``) wraps the number into a
    double tensor and converts it first, which costs twice the op itself at [N, 1]; with a
    tensor of the right dtype the op computes exactly the same. Never modify one in place.
    """

    __slots__ = ("_table", "_like")

    def __init__(self, like: torch.Tensor):
        self._like = like
        if torch.compiler.is_compiling():
            # Traced by torch.compile: the constants become part of the graph. A shared table
            # would only add guards on its contents (and a recompile whenever it grows).
            self._table = None
            return
        key = (like.dtype, like.device)
        table = _CONSTANTS.get(key)
        self._table = table if table is not None else _CONSTANTS.setdefault(key, {})

    def __call__(self, x: float) -> torch.Tensor:
        if self._table is None:
            return torch.tensor(x, dtype=self._like.dtype, device=self._like.device)
        t = self._table.get(x)
        if t is None:
            with torch.inference_mode(False):  # usable outside an inference_mode block as well
                t = self._table[x] = torch.tensor(x, dtype=self._like.dtype, device=self._like.device)
        return t

    def product(self, x: float, y: float) -> float:
        """``x * y`` rounded as the dtype computes it from ``x`` and ``y`` in that dtype (the
        value of ``clamp(a, max=x) * clamp(b, min=y)`` where both clamps bite)."""
        if self._table is None:
            return _rounded_product(x, y, self._like.dtype)
        key = ("product", x, y)
        value = self._table.get(key)
        if value is None:
            value = self._table[key] = _rounded_product(x, y, self._like.dtype)
        return value


@torch.compiler.assume_constant_result  # traced, it is run once and its number kept in the graph
def _rounded_product(x: float, y: float, dtype: torch.dtype) -> float:
    return (torch.tensor(x, dtype=dtype) * torch.tensor(y, dtype=dtype)).item()


# ---------------------------------------------------------------------------------------------
# Softmax terms
# ---------------------------------------------------------------------------------------------

class Sum:
    """``weight * tensor``, a weighted sum kept unscaled: adding ``w * x`` is one ``add_`` with
    ``alpha = w / weight``, and adding ``w * x * y`` one ``addcmul_``, so that the scalar weights
    of the terms cost no op of their own. ``owned``: the tensor is the sum's to modify (not a
    statistic that the terms share)."""

    __slots__ = ("tensor", "weight", "owned")

    def __init__(self, tensor: torch.Tensor, weight: float, owned: bool):
        self.tensor, self.weight, self.owned = tensor, weight, owned

    def add(self, x: torch.Tensor, weight: float) -> None:
        if self.owned:
            self.tensor.add_(x, alpha=weight / self.weight)
        else:
            self.tensor, self.owned = torch.add(self.tensor, x, alpha=weight / self.weight), True

    def add_product(self, x: torch.Tensor, y: torch.Tensor, weight: float) -> None:
        if self.owned:
            self.tensor.addcmul_(x, y, value=weight / self.weight)
        else:
            self.tensor, self.owned = torch.addcmul(self.tensor, x, y, value=weight / self.weight), True

    def scaled(self, c: Constants) -> torch.Tensor:
        """``weight * tensor`` as a tensor the caller may modify."""
        if self.weight == 1:
            return self.tensor if self.owned else self.tensor.clone()
        return self.tensor.mul_(c(self.weight)) if self.owned else torch.mul(self.tensor, c(self.weight))


def _add(total: Sum | None, x: torch.Tensor, weight: float, owned: bool) -> Sum | None:
    if weight == 0:
        return total
    if total is None:
        return Sum(x, weight, owned)
    total.add(x, weight)
    return total


def _add_product(total: Sum | None, x: torch.Tensor, y: torch.Tensor, weight: float,
                 owned: bool) -> Sum | None:
    if weight == 0:
        return total
    if total is None:
        return Sum(x.mul_(y) if owned else torch.mul(x, y), weight, True)
    total.add_product(x, y, weight)
    return total


class Batch:
    """Softmax statistics of one batch (computed on first use, shared by the terms of a loss)
    and the value and gradient the terms add up.

    ``logp`` is ``log_softmax(z)`` and ``p`` is ``softmax(z)``, or ``exp(logp)`` where the
    loss computes ``logp`` anyway (each only computed when a term needs it; equal to the
    official code's up to float rounding); ``p_y`` and ``logp_y`` are their label entries,
    [N, 1]. A term adds its weighted per-sample value (``add_value``, ``value_const``) and, when
    ``need_grad``, its gradient with respect to ``log p``, ``h = label * e_y + row * 1 + dense``
    (``add_label``, ``label_const``, ``add_row``, ``add_dense``), already multiplied by
    ``grad_scale`` (1 / N for the batch mean): the gradient is that of the value ``evaluate``
    returns. The statistics are shared: terms never modify them in place, and pass them with
    ``owned=False``.

    At [N, 1] an op costs its dispatch only and at [N, K] not much more, so every op counts:
    constants are cached tensors (``c``), products are accumulated with ``addcmul_`` and the
    gradient is assembled in a few in-place ops (``gradient``).
    """

    __slots__ = ("logits", "index", "size", "num_classes", "need_grad", "grad_scale", "full_p",
                 "p_from_logp", "c", "_p", "_logp", "_p_y", "_logp_y", "_focal", "value", "label",
                 "row", "dense", "value_const", "label_const")

    def __init__(self, logits: torch.Tensor, labels: torch.Tensor, need_grad: bool, grad_scale: float,
                 reads: frozenset[str] = frozenset({"p"})):
        self.logits = logits
        self.index = labels.unsqueeze(1)
        self.size, self.num_classes = logits.shape
        self.need_grad, self.grad_scale = need_grad, grad_scale
        # What the terms read (``Term.reads``) decides how p is had. Where log p is computed
        # anyway, p is ``exp(log p)`` (an exp2, half of softmax's time; also the focal code's
        # ``pt = logpt.data.exp()``), and a loss that reads only p_y besides log p takes it as
        # ``exp(log p_y)``, [N, 1], with no [N, K] p at all. A loss that reads no log p has p
        # from softmax, as the official code.
        self.full_p = "p" in reads or "log_p" not in reads
        self.p_from_logp = "log_p" in reads
        self.c = Constants(logits)
        self._p = self._logp = self._p_y = self._logp_y = self._focal = None
        self.value = self.label = self.row = self.dense = None
        self.value_const = self.label_const = 0.0

    # Plain lazy properties: functools.cached_property takes a lock on every first access.
    @property
    def p(self) -> torch.Tensor:
        if self._p is None:
            self._p = torch.mul(self.logp, self.c(LOG2_E)).exp2_() if self.p_from_logp \
                else torch.softmax(self.logits, dim=1)
        return self._p

    @property
    def logp(self) -> torch.Tensor:
        if self._logp is None:
            self._logp = torch.log_softmax(self.logits, dim=1)
        return self._logp

    @property
    def p_y(self) -> torch.Tensor:
        if self._p_y is None:
            self._p_y = self.p.gather(1, self.index) if self.full_p or self._p is not None \
                else self.logp_y.exp()
        return self._p_y

    @property
    def logp_y(self) -> torch.Tensor:
        if self._logp_y is None:
            self._logp_y = self.logp.gather(1, self.index)
        return self._logp_y

    def at_label(self, x: torch.Tensor) -> torch.Tensor:
        """x[n, y_n] as [N, 1] for a [N, K] tensor."""
        return x.gather(1, self.index)

    def focal(self, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The focal weights ``(1 - p)^gamma`` (0^0 = 1; ``p = exp(log p)``) and their products
        with ``log p``, shared by the focal terms of one loss."""
        if self._focal is None:
            self._focal = {}
        weights = self._focal.get(gamma)
        if weights is None:
            weight = torch.sub(self.c(1.0), self.p)
            # pow(x, 0.5) is sqrt(x) bit for bit in ATen; sqrt_ skips pow's dispatch.
            weight = weight.sqrt_() if gamma == 0.5 else weight.pow_(gamma)
            weights = self._focal[gamma] = weight, weight * self.logp
        return weights

    def add_value(self, x: torch.Tensor, weight: float, owned: bool = False) -> None:
        self.value = _add(self.value, x, weight, owned)

    def add_value_product(self, x: torch.Tensor, y: torch.Tensor, weight: float, owned: bool = False) -> None:
        self.value = _add_product(self.value, x, y, weight, owned)

    def add_label(self, x: torch.Tensor, weight: float, owned: bool = False) -> None:
        self.label = _add(self.label, x, weight, owned)

    def add_label_product(self, x: torch.Tensor, y: torch.Tensor, weight: float, owned: bool = False) -> None:
        """Adds ``weight * x * y``; ``owned``: x is the caller's temporary (multiplied in place)."""
        self.label = _add_product(self.label, x, y, weight, owned)

    def add_row(self, x: torch.Tensor, weight: float, owned: bool = False) -> None:
        self.row = _add(self.row, x, weight, owned)

    def add_row_product(self, x: torch.Tensor, y: torch.Tensor, weight: float, owned: bool = False) -> None:
        self.row = _add_product(self.row, x, y, weight, owned)

    def add_dense(self, x: torch.Tensor, weight: float, owned: bool = False) -> None:
        self.dense = _add(self.dense, x, weight, owned)

    def add_dense_off_label(self, x: torch.Tensor, weight: float, owned: bool = False) -> None:
        """Adds ``weight * x`` at every entry but the label's. Where another term has a label
        part, x's label entries are taken out there ([N, 1]), else zeroed in x (a scatter into
        [N, K], which costs more)."""
        if self.label is None and not self.label_const:
            self.add_dense(x.scatter_(1, self.index, 0.0) if owned else x.scatter(1, self.index, 0.0),
                           weight, owned=True)
        else:
            self.add_label(self.at_label(x), -weight, owned=True)
            self.add_dense(x, weight, owned)

    def add_dense_product(self, x: torch.Tensor, y: torch.Tensor, weight: float, owned: bool = False) -> None:
        """Adds ``weight * x * y`` for x [N, K] and y [N, 1], a temporary of the caller's: the
        first one takes the weight into y rather than into [N, K]."""
        if self.dense is None and weight != 1:
            y, weight = y.mul_(self.c(weight)), 1.0
        self.dense = _add_product(self.dense, x, y, weight, owned)

    def total_value(self, reduce: bool) -> torch.Tensor:
        """The batch mean or the per-sample values [N]."""
        value, const = self.value, self.value_const
        if value is None:
            zero = self.logits.new_zeros(())
            return zero + const if reduce else zero.expand(self.size) + const
        if reduce:
            total = value.tensor.sum()
            if const:
                return torch.add(self.c(const), total, alpha=value.weight / self.size)
            # sum / N is what mean() computes
            return total.div_(self.c(float(self.size))) if value.weight == 1 \
                else total.mul_(self.c(value.weight / self.size))
        total = value.scaled(self.c).squeeze(1)
        return total.add_(self.c(const)) if const else total

    def gradient(self, row_scale: torch.Tensor | None = None) -> torch.Tensor:
        """``d value / dz = h - p * sum_k h_k`` for ``h = label * e_y + row + dense``, each row
        times ``row_scale`` [N, 1] if given."""
        label, row, dense, c = self.label, self.row, self.dense, self.c
        if row_scale is not None:
            for part in (label, row, dense):
                if part is not None:
                    part.tensor, part.owned = part.scaled(c).mul_(row_scale), True
                    part.weight = 1.0
            if self.label_const:
                label = _add(label, row_scale, self.label_const, False)
                self.label_const = 0.0
        if label is not None:
            if not self.label_const:
                label_h = label.scaled(c)
            elif label.owned and label.weight == 1:
                label_h = label.tensor.add_(c(self.label_const))
            else:
                label_h = torch.add(c(self.label_const), label.tensor, alpha=label.weight)
        elif self.label_const:
            label_h = c(self.label_const).expand(self.size, 1)
        else:
            label_h = None
        if self._p is None:
            # No term read p: ``h`` in one [N, K] tensor, then the backward of log_softmax
            # (``h - exp(log p) * sum_k h_k``, one fused op, as autograd differentiates log_softmax).
            if dense is not None:
                h = dense.scaled(c)
                if row is not None:
                    h.add_(row.tensor, alpha=row.weight)
            elif row is not None:
                h = row.scaled(c).expand(self.size, self.num_classes).contiguous()
            else:
                h = torch.zeros_like(self.logits)
            if label_h is not None:
                h.scatter_add_(1, self.index, label_h)
            return torch._log_softmax_backward_data(h, self.logp, 1, h.dtype)
        if dense is not None:
            h = dense.scaled(c)
            if row is not None:
                h.add_(row.tensor, alpha=row.weight)
            total = h.sum(1, keepdim=True)
            if label_h is None:
                return h.addcmul_(self.p, total, value=-1)
            # The label part is added last (not summed into h first): in float32 it is often
            # the largest part, and p_y * total nearly cancels it.
            return h.addcmul_(self.p, total.add_(label_h), value=-1).scatter_add_(1, self.index, label_h)
        if row is not None:  # sum_k h_k = label + K * row
            row_h = row.scaled(c)
            if label_h is None:
                total = torch.mul(row_h, c(-float(self.num_classes)))
            else:
                total = torch.add(label_h, row_h, alpha=self.num_classes).neg_()
            grad = torch.mul(self.p, total).add_(row_h)
        else:
            grad = torch.mul(self.p, label_h.neg())
        return grad if label_h is None else grad.scatter_add_(1, self.index, label_h)


Term = Callable[[Batch, float], None]


class SoftmaxLoss(HandWrittenLoss):
    """``sum_i weight_i * term_i`` of the softmax, per sample.

    Terms with weight 0 (e.g. ALFs' MNIST NCE+AGCE with alpha = 0) are not evaluated.
    """

    def __init__(self, terms: Sequence[tuple[float, Term]], l1: float = 0.0):
        super().__init__(l1)
        self.terms = tuple((float(w), t) for w, t in terms if w != 0)
        # What the terms read: "log_p", "p_y" or "p" (a term's ``reads``, "p" unless it says
        # otherwise); see ``Batch``.
        self.reads = frozenset(getattr(t, "reads", "p") for _, t in self.terms)

    def evaluate(self, logits, labels, reduce, need_grad, row_scale=None):
        """``row_scale``: an [N, 1] factor for each sample's gradient (not for its value)."""
        batch = Batch(logits, labels, need_grad, 1 / labels.shape[0] if reduce else 1.0, self.reads)
        for weight, term in self.terms:
            term(batch, weight)
        return batch.total_value(reduce), batch.gradient(row_scale) if need_grad else None

    def values(self, logits, labels):
        if not self.terms:  # every weight is 0
            return logits.sum(1) * 0.0
        return super().values(logits, labels)

    def batch_value(self, logits, labels):
        if not self.terms:
            return logits.sum() * 0.0
        return super().batch_value(logits, labels)
