"""The decoupled rectifier module: the original forward, with per-row slopes for the gradient.

Each replacement computes the original op exactly (bit-identical to the unrewritten graph).
Two optional per-row slope tensors, set by :class:`~onnx_am.passes.control.SlopeControl`,
change what it does; a NaN entry means "this row uses alpha", i.e. the original op:

- ``backward_slope``: rows with a slope ``beta`` keep the original forward value, but their
  gradient is ``1`` where ``x > 0`` and ``beta`` where ``x <= 0`` (``decoupled``); a clip's
  saturated top (``x >= upper``) passes ``0``, or ``beta`` with ``decouple_upper``;
- ``forward_slope``: rows with a slope ``beta`` compute ``where(x > 0, x, beta * x)`` (with
  the clip's top) and take its ordinary gradient: the proxy network of ProxyGrad. Such a
  row's ``backward_slope`` is irrelevant (its gradient is the proxy network's).

What the slopes mean for one module is worked out once per new pair of slope tensors (a
:class:`SlopeLayout`), so a step costs no more than the path it needs: the original op; every
row decoupled (no graph through the original op; one float beta: the fused
``leaky_relu_backward`` kernel); every row proxy (only the proxy op, ``leaky_relu`` for one
float); or the general per-row mix (no full-size ``torch.where``, which is slow on a CPU).
Slopes are rounded to the input's dtype once, as a tensor of that dtype would hold them.

Every path computes the same products as the plain per-row form (``grad * 1``,
``grad * beta``, ``x * beta``), so values and gradients are identical to it. The only
difference is that terms which are always ``grad * 0`` (the original op's branch of a
decoupled row, the redirect of a proxy row) are not computed: with a finite incoming
gradient adding them changes nothing (at most the sign of a zero); with an infinite one they
made NaN.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from onnx_am.errors import PassError
from onnx_am.passes.spans import Span, SpanPlan, SpanRule, SpansGradient, find_spans, spans_of

#: A forward slope: one float, or one per channel (PRelu) in the slope's ONNX shape.
Alpha = float | np.ndarray

#: A slope as a path uses it: one float for every row, or a per-row (per-channel) tensor.
Slope = float | torch.Tensor


def local_slope(
    x: torch.Tensor,
    above: Slope,
    below: Slope,
    upper: float | None = None,
    top: Slope = 0.0,
) -> torch.Tensor:
    """Per element: ``above`` where ``x > 0``, ``below`` at or below 0, ``top`` at ``x >= upper``.

    The same values as nested ``torch.where`` (several times slower on a CPU), written on a
    0/1 step ``s``: ``s * above + (1 - s) * below`` is exactly ``above`` or ``below``, since
    the other term is a product with 0 (the factors are finite: NaN slopes are never passed).
    """
    x = x.detach()
    # Comparisons written straight into x's dtype: 1.0 / 0.0, several times faster than bool.
    step = torch.gt(x, 0, out=torch.empty_like(x))
    local = step * above + (1 - step) * below
    if upper is not None:
        cap = torch.ge(x, upper, out=torch.empty_like(x))
        local = local * (1 - cap) + cap * top
    return local


def _fused(grad: torch.Tensor, x: torch.Tensor, beta: Slope, upper: float | None) -> bool:
    """Whether ``leaky_relu_backward`` computes the decoupled gradient (one float, no top)."""
    return (
        isinstance(beta, float)
        and upper is None
        and grad.shape == x.shape
        and grad.dtype == x.dtype
    )


class RedirectGradient(torch.autograd.Function):
    """Identity on ``y``; rows with a finite slope send their gradient to ``x`` by the beta rule.

    The general path (some rows use alpha): ``keep`` is 1 for rows with a slope, 0 for alpha
    rows, ``drop = 1 - keep``, ``beta`` the slopes with 0 for alpha rows, all broadcasting
    against ``x``; ``scalar`` is the one slope of all rows that have one, or ``None``. Then
    ``grad_x = grad * (x > 0 ? keep : beta)`` (with the clip's top rule) and
    ``grad_y = grad * drop`` (alpha rows get the original op's gradient). With a ``scalar``
    the first is ``leaky_relu_backward(grad, x, scalar) * keep``: the same products, and
    ``* 0`` on the alpha rows as before.
    """

    @staticmethod
    def forward(ctx, y, x, factors, scalar, upper, decouple_upper):  # noqa: D102
        ctx.save_for_backward(x, *factors)
        ctx.scalar = scalar
        ctx.upper = upper
        ctx.decouple_upper = decouple_upper
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, keep, beta, drop = ctx.saved_tensors
        if _fused(grad, x, ctx.scalar, ctx.upper):
            grad_x = torch.ops.aten.leaky_relu_backward(grad, x, ctx.scalar, False) * keep
        else:
            top = beta if ctx.decouple_upper else 0.0
            grad_x = grad * local_slope(x, keep, beta, ctx.upper, top)
        grad_y = grad * drop
        if grad_x.shape != x.shape:
            grad_x = grad_x.sum_to_size(x.shape)
        return grad_y, grad_x, None, None, None, None


class DecoupledGradient(torch.autograd.Function):
    """Every row decoupled: returns ``y`` (computed without a graph) and sends the gradient to
    ``x`` with slope 1 where ``x > 0``, ``beta`` at or below 0 (and the clip's top rule).

    Gives the same values as :class:`RedirectGradient` with every row kept: ``grad * 1`` and
    ``grad * beta`` are the same products, and the original op's graph, which would only get
    ``grad * 0``, is not built. One float ``beta`` uses the fused ``leaky_relu_backward``
    kernel (``x > 0 ? grad : grad * beta``), many times faster than ``where`` on a CPU.
    """

    @staticmethod
    def forward(ctx, y, x, beta, upper, decouple_upper):  # noqa: D102
        ctx.save_for_backward(x)
        ctx.beta = beta
        ctx.upper = upper
        ctx.top_slope = beta if decouple_upper else 0.0
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (x,) = ctx.saved_tensors
        if _fused(grad, x, ctx.beta, ctx.upper):
            grad_x = torch.ops.aten.leaky_relu_backward(grad, x, ctx.beta, False)
        else:
            grad_x = grad * local_slope(x, 1.0, ctx.beta, ctx.upper, ctx.top_slope)
        if grad_x.shape != x.shape:
            grad_x = grad_x.sum_to_size(x.shape)
        return None, grad_x, None, None, None


def proxy_rectifier(
    x: torch.Tensor, beta: Slope, upper: float | None = None, decouple_upper: bool = False
) -> torch.Tensor:
    """The proxy network's rectifier: slope ``beta`` below 0, a cap (or slope) at ``upper``.

    Below the top it is ``x * (x > 0 ? 1 : beta)``: a float ``beta`` uses ``leaky_relu``,
    a tensor :func:`local_slope`; both give the products of ``where(x > 0, x, beta * x)``
    and of its gradient, ``g`` and ``g * beta``.
    """
    if isinstance(beta, torch.Tensor):
        out = x * local_slope(x, 1.0, beta)
        top_slope = beta if decouple_upper else torch.zeros_like(beta)
    else:
        out = functional.leaky_relu(x, beta)
        top_slope = beta if decouple_upper else 0.0
    if upper is None:
        return out
    return torch.where(x < upper, out, upper + top_slope * (x - upper))


class SlopeLayout:
    """What a module's slope tensors ask for, worked out once per new pair of tensors.

    Attributes:
        spans: the rows as contiguous :class:`~onnx_am.passes.spans.Span` s (``None`` when
            the slopes are per channel or the rows alternate too often).
        rows: the batch size the slopes were set for.
        path: ``"proxy"`` (every row proxy), ``"decoupled"`` (every row decoupled) or
            ``"mixed"`` (some rows use alpha, or the kinds differ).
        forward: the proxy slope (float when every row has the same one, else the tensor).
        backward: the decoupled slope, likewise (``None`` when no row needs it).
    """

    spans: tuple[Span, ...] | None = None

    def __init__(self, node: str, forward: torch.Tensor | None, backward: torch.Tensor | None):
        self.node = node
        self.rows = (forward if forward is not None else backward).shape[0]
        proxy_rows, some_proxy = _rows_set(forward, self.rows)
        all_backward, some_backward = _rows_set(backward, self.rows)
        any_proxy = any(some_proxy)
        # A row with a forward slope takes its gradient from the proxy op: its backward
        # slope is never used, so only the other rows count for the redirect.
        redirect = any(b and not p for b, p in zip(some_backward, proxy_rows, strict=True))
        if all(proxy_rows):
            self.path, self.forward, self.backward = "proxy", _uniform(forward), None
        elif not any_proxy and all(all_backward):
            self.path, self.forward, self.backward = "decoupled", None, _uniform(backward)
        else:
            self.path = "mixed"
            self.forward = forward if any_proxy else None
            self.backward = backward if redirect else None
        self.backward_scalar = None
        if self.path == "mixed" and self.backward is not None:
            self.backward_scalar = _common_value(backward)
        self.spans = find_spans(forward, backward, self.rows)
        self._cache: dict[tuple, object] = {}

    @classmethod
    def of_methods(
        cls,
        node: str,
        forward: torch.Tensor | None,
        backward: torch.Tensor | None,
        keys: list[tuple[str, float]],
        layout: tuple[int, ...],
    ) -> SlopeLayout:
        """The plan of ``(forward, backward)`` from what they were built of, without reading
        them: row ``r`` uses method ``layout[r]``, whose ``keys`` entry is ``("proxy",
        beta)``, ``("decoupled", beta)`` or ``("alpha", 0.0)`` (one float slope per method).

        The same plan as ``SlopeLayout(node, forward, backward)`` (``tests/test_fast_paths.py``)
        at a cost per method instead of per row: a schedule makes new slopes every step.
        """
        plan = cls.__new__(cls)
        plan.node, plan.rows, plan._cache = node, len(layout), {}
        used = [keys[i] for i in dict.fromkeys(layout)]
        kinds = {kind for kind, _ in used}

        def single(kind: str, tensor: torch.Tensor) -> Slope:
            values = {value for k, value in used if k == kind}
            return values.pop() if len(values) == 1 else tensor

        plan.backward_scalar = None
        if kinds == {"proxy"}:
            plan.path, plan.forward, plan.backward = "proxy", single("proxy", forward), None
        elif kinds == {"decoupled"}:
            plan.path, plan.forward = "decoupled", None
            plan.backward = single("decoupled", backward)
        else:
            plan.path = "mixed"
            plan.forward = forward if "proxy" in kinds else None
            plan.backward = backward if "decoupled" in kinds else None
            if plan.backward is not None:  # every set entry counts, proxy rows' too
                values = {value for kind, value in used if kind != "alpha"}
                plan.backward_scalar = values.pop() if len(values) == 1 else None
        plan.spans = spans_of([keys[i] for i in layout])
        return plan

    def check(self, x: torch.Tensor) -> None:
        """Raise :class:`PassError` unless ``x`` has one row per slope row."""
        if x.dim() == 0 or x.shape[0] != self.rows:
            batch = x.shape[0] if x.dim() else "a scalar"
            raise PassError(
                f"slopes were set for {self.rows} row(s) but node {self.node!r} got a batch "
                f"of {batch}; set_rows needs one method per row of the batch (rowwise batching "
                "runs rows one at a time and cannot mix methods)"
            )

    def slope(self, which: str, x: torch.Tensor) -> Slope:
        """The ``forward``/``backward`` slope in ``x``'s dtype, on its device, broadcastable.

        Converted once per (dtype, device, rank) and cached, so no transfer per forward.
        """
        key = (which, x.dtype, x.device, x.dim())
        if key not in self._cache:
            self._cache[key] = self._convert(getattr(self, which), x)
        return self._cache[key]

    def spans_for(self, x: torch.Tensor, rule: SpanRule | None) -> SpanPlan | None:
        """The :attr:`spans` with slopes rounded to ``x``'s dtype, when ``rule`` can run them."""
        key = ("spans", x.dtype)
        if key not in self._cache:
            prepared = None
            if self.spans is not None and rule is not None and rule.accepts(self.spans):
                spans = tuple(
                    Span(r.start, r.stop, r.kind, self._convert(r.slope, x)) for r in self.spans
                )
                prepared = SpanPlan(spans, rule, any(r.kind == "proxy" for r in spans))
            self._cache[key] = prepared
        return self._cache[key]

    def redirect_factors(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], Slope | None]:
        """``((keep, beta, drop), scalar)`` of :class:`RedirectGradient`, cached like
        :meth:`slope`."""
        key = ("redirect", x.dtype, x.device, x.dim())
        if key not in self._cache:
            slope = self.slope("backward", x)
            keep = (~torch.isnan(slope)).to(x.dtype)
            scalar = (
                None if self.backward_scalar is None else self._convert(self.backward_scalar, x)
            )
            factors = keep, torch.nan_to_num(slope, nan=0.0), 1 - keep
            self._cache[key] = factors, scalar
        return self._cache[key]

    def proxy_factors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha_rows, beta)`` of the mixed proxy: a bool mask and the NaN-free slopes."""
        key = ("proxy", x.dtype, x.device, x.dim())
        if key not in self._cache:
            slope = self.slope("forward", x)
            self._cache[key] = torch.isnan(slope), torch.nan_to_num(slope, nan=0.0)
        return self._cache[key]

    def _convert(self, slope: Slope, x: torch.Tensor) -> Slope:
        if not isinstance(slope, torch.Tensor):
            # Rounded to x's precision, as a one-element tensor of that dtype would be (numpy
            # rounds the same way, in a fraction of the time: this runs per step with a schedule).
            rounding = _NUMPY_FLOATS.get(x.dtype)
            if rounding is not None:
                return float(rounding(slope))
            return torch.tensor(slope, dtype=x.dtype).item()
        slope = slope.to(dtype=x.dtype, device=x.device)
        if slope.dim() == 1:
            return slope.view(-1, *([1] * (x.dim() - 1)))
        return slope.view(-1, *_channel_shape(tuple(slope.shape[1:]), x.dim(), self.node))


#: The numpy scalar types that round a Python float as a torch tensor of that dtype does.
_NUMPY_FLOATS = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


# The helpers below read per-row (1-D) slopes as Python lists, one transfer each: a schedule
# makes new slope tensors every step, and a tensor op per fact costs microseconds each.


def _rows_set(slope: torch.Tensor | None, rows: int) -> tuple[list[bool], list[bool]]:
    """Per row: whether all, and whether any, of its entries are set (not NaN)."""
    if slope is None:
        return [False] * rows, [False] * rows
    if slope.dim() == 1:
        finite = [not math.isnan(value) for value in slope.tolist()]
        return finite, finite
    finite = ~torch.isnan(slope).reshape(slope.shape[0], -1)
    return finite.all(1).tolist(), finite.any(1).tolist()


def _common_value(slope: torch.Tensor) -> float | None:
    """The one value of all set (non-NaN) entries, or ``None`` if they differ."""
    values = [v for v in slope.reshape(-1).tolist() if not math.isnan(v)]
    return values[0] if all(v == values[0] for v in values) else None


def _uniform(slope: torch.Tensor) -> Slope:
    """A float when every entry is the same (none NaN), else the tensor itself."""
    if slope.dim() == 1:
        values = slope.tolist()
        return values[0] if all(v == values[0] for v in values) else slope
    flat = slope.reshape(-1)
    return float(flat[0]) if bool((flat == flat[0]).all()) else slope


class DecoupledRectifier(nn.Module):
    """Base of the replacement modules; subclasses implement :meth:`true_forward`.

    Assign new tensors to change the slopes (the module works out what they mean once per
    new pair of tensors; editing a tensor in place is not seen).

    Attributes:
        node: the ONNX node name.
        op_type: the ONNX op type.
        alpha: the forward slope (float, or per-channel array in the ONNX slope shape).
        upper: the saturation value of a clip (``None`` when there is none).
        decouple_upper: whether the saturated top uses ``beta`` too.
        forward_slope: ``None`` or a float tensor ``(N,)`` / ``(N, *alpha.shape)``, NaN = alpha.
        backward_slope: likewise, for the gradient.
        source_module: the converted module this one replaces (not a registered child).
    """

    def __init__(
        self,
        node: str,
        op_type: str,
        alpha: Alpha,
        source_module: nn.Module,
        upper: float | None = None,
        decouple_upper: bool = False,
    ):
        super().__init__()
        self.node = node
        self.op_type = op_type
        self.alpha = alpha
        self.upper = upper
        self.decouple_upper = decouple_upper
        self.forward_slope: torch.Tensor | None = None
        self.backward_slope: torch.Tensor | None = None
        # Kept out of _modules so it is neither a child nor in the state dict.
        self.__dict__["source_module"] = source_module
        self.__dict__["_planned"] = (None, None, None)

    def true_forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The original op, computed exactly as the converted module computes it."""
        raise NotImplementedError

    def rectified_input(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The tensor ``x`` whose sign decides the slope (the first input by default)."""
        return inputs[0]

    def span_rule(self) -> SpanRule | None:
        """How this module computes spans of rows (:mod:`onnx_am.passes.spans`), built once
        by :meth:`make_span_rule`."""
        rule = self.__dict__.get("_span_rule", False)
        if rule is False:
            rule = self.__dict__["_span_rule"] = self.make_span_rule()
        return rule

    def make_span_rule(self) -> SpanRule | None:
        """The :class:`SpanRule` of this op; ``None`` (the default) when it has none, e.g. an
        op with two inputs, which then takes the general path."""
        return None

    def set_slopes(
        self,
        forward: torch.Tensor | None,
        backward: torch.Tensor | None,
        plan: SlopeLayout | None = None,
    ) -> None:
        """Assign both slope attributes (cheaper than two ``nn.Module`` attribute sets), and
        their :class:`SlopeLayout` when the caller already has it."""
        # Neither is a parameter, buffer or child, so plain instance attributes are exact.
        self.__dict__["forward_slope"] = forward
        self.__dict__["backward_slope"] = backward
        if plan is not None:
            self.__dict__["_planned"] = (forward, backward, plan)

    def plan(self) -> SlopeLayout | None:
        """The :class:`SlopeLayout` of the current slope tensors (``None`` when both are unset)."""
        forward, backward = self.forward_slope, self.backward_slope
        if forward is None and backward is None:
            return None
        planned_forward, planned_backward, plan = self._planned
        if planned_forward is not forward or planned_backward is not backward:
            plan = SlopeLayout(self.node, forward, backward)
            self.__dict__["_planned"] = (forward, backward, plan)
        return plan

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:  # noqa: D102
        plan = self.plan()
        if plan is None:
            return self.true_forward(*inputs)
        x = self.rectified_input(*inputs)
        plan.check(x)
        spans = plan.spans_for(x, self.span_rule())
        if spans is not None:
            return SpansGradient.apply(x, self, spans)
        if plan.path == "proxy":
            return proxy_rectifier(x, plan.slope("forward", x), self.upper, self.decouple_upper)
        if plan.path == "decoupled":
            with torch.no_grad():
                y = self.true_forward(*inputs)
            beta = plan.slope("backward", x)
            return DecoupledGradient.apply(y, x, beta, self.upper, self.decouple_upper)
        return self._mixed(plan, x, self.true_forward(*inputs))

    def _mixed(self, plan: SlopeLayout, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The general path: per-row slopes, NaN rows run the original op."""
        if plan.backward is not None:
            factors, scalar = plan.redirect_factors(x)
            y = RedirectGradient.apply(y, x, factors, scalar, self.upper, self.decouple_upper)
        if plan.forward is not None:
            alpha_rows, beta = plan.proxy_factors(x)
            proxy = proxy_rectifier(x, beta, self.upper, self.decouple_upper)
            y = torch.where(alpha_rows, y, proxy)
        return y


def _channel_shape(shape: tuple[int, ...], rank: int, node: str) -> tuple[int, ...]:
    """The non-batch part of a per-channel slope shape, right-aligned to ``rank`` (ONNX rules)."""
    if len(shape) <= rank - 1:
        return (1,) * (rank - 1 - len(shape)) + shape
    if len(shape) == rank and shape[0] == 1:
        return shape[1:]
    raise PassError(
        f"slope of shape {shape} of node {node!r} does not broadcast to an input of rank {rank}"
    )
