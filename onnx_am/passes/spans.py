"""Rows in spans: one rectifier call whose backward costs what the original op's backward costs.

The engine batches each chunk's rows grouped by gradient method, so a module's per-row slopes
come in a few contiguous *spans* of rows with one kind and one slope each (all rows of a
``decoupled(0.3)`` chunk are one span; ``best`` gives a standard span and a decoupled one).
:class:`SpansGradient` then computes, per span, exactly what that span's rows need:

- forward: the original op once over the batch (the proxy op over proxy spans instead;
  a chunk of proxy rows alone is one span too, so its graph also keeps only the output);
- backward: one fused elementwise kernel per span on a slice of the incoming gradient, from
  one saved tensor: the original op's own backward for standard (``alpha``) spans
  (``threshold_backward`` for a ReLU, as ``nn.ReLU`` does), ``leaky_relu_backward`` with the
  span's ``beta`` for decoupled and proxy spans (``x > 0 ? g : g * beta``), and for a clip's
  saturated top the same zeroing as ``hardtanh_backward``.

The saved tensor is the op's output wherever its sign says what the input's sign says (ReLU,
LeakyReLU with ``alpha >= 0``, ReLU6 and proxies with ``beta >= 0``: ``y > 0`` exactly where
``x > 0``, ``y >= upper`` exactly where ``x >= upper``). The output is what the next layer
keeps anyway, so the rewritten graph keeps no more tensors than the original one; a
rectifier whose output cannot stand in saves its input.

Every kernel forms the same products as the plain per-row formula (``g``, ``g * beta``, a
zero), so values and gradients equal the general path's (see ``tests/test_fast_paths.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional

#: More spans than this take the general path (a per-row slope tensor); the engine makes one
#: span per gradient method of a chunk.
MAX_SPANS = 16

_aten = torch.ops.aten


@dataclass(frozen=True)
class Span:
    """Rows ``start:stop`` share a kind (``"alpha"``, ``"decoupled"``, ``"proxy"``) and slope."""

    start: int
    stop: int
    kind: str
    slope: float = 0.0


def find_spans(
    forward: torch.Tensor | None, backward: torch.Tensor | None, rows: int
) -> tuple[Span, ...] | None:
    """The spans of equal (kind, slope) rows, or ``None`` (a per-channel slope, too many spans).

    Args:
        forward: ``(N,)`` proxy slopes (NaN: none) or ``None``.
        backward: ``(N,)`` decoupled slopes (NaN: none) or ``None``; ignored on proxy rows.
        rows: ``N``.
    """
    if any(t is not None and t.dim() != 1 for t in (forward, backward)):
        return None
    # One transfer per tensor: indexing a tensor row by row costs microseconds per row, and a
    # schedule makes new slopes (so new spans) every step.
    proxies = [None] * rows if forward is None else forward.tolist()
    decoupleds = [None] * rows if backward is None else backward.tolist()
    keys = []
    for proxy, decoupled in zip(proxies, decoupleds, strict=True):
        if proxy is not None and not math.isnan(proxy):
            keys.append(("proxy", proxy))
        elif decoupled is not None and not math.isnan(decoupled):
            keys.append(("decoupled", decoupled))
        else:
            keys.append(("alpha", 0.0))
    return spans_of(keys)


def spans_of(keys: Sequence[tuple[str, float]]) -> tuple[Span, ...] | None:
    """The spans of equal consecutive ``(kind, slope)`` row keys, or ``None`` when there are
    more than :data:`MAX_SPANS`."""
    spans: list[Span] = []
    start = 0
    for row in range(1, len(keys) + 1):
        if row == len(keys) or keys[row] != keys[start]:
            if len(spans) == MAX_SPANS:
                return None
            spans.append(Span(start, row, *keys[start]))
            start = row
    return tuple(spans)


class SpanRule:
    """How one single-input rectifier computes spans of rows.

    Attributes:
        saves_output: save ``y`` (its sign and top say what ``x``'s do) instead of ``x``.
        upper: the clip's saturation value, or ``None``.
        decouple_upper: the top passes ``beta`` instead of 0.
        alpha_grad: ``(op, extra args)`` of the original op's backward kernel on the saved
            tensor (``threshold_backward``, ``leaky_relu_backward``, ``hardtanh_backward``),
            or ``None`` when it has none here (spans of standard rows then take the general
            path).
    """

    def __init__(
        self,
        *,
        saves_output: bool,
        upper: float | None = None,
        decouple_upper: bool = False,
        alpha_grad: tuple[object, tuple] | None = None,
    ):
        self.saves_output = saves_output
        self.upper = upper
        self.decouple_upper = decouple_upper
        self.alpha_grad = alpha_grad

    def accepts(self, spans: tuple[Span, ...]) -> bool:
        """Whether every span can be computed here (else the general path is taken)."""
        for span in spans:
            if span.kind == "alpha" and self.alpha_grad is None:
                return False
            # A proxy's output has x's sign only for beta >= 0.
            if span.kind == "proxy" and self.saves_output and not span.slope >= 0:
                return False
        return True

    def proxy_value(self, x: torch.Tensor, beta: float) -> torch.Tensor:
        """The proxy op's values (no graph): ``leaky_relu(x, beta)`` and the top.

        Below the top the products of :func:`~onnx_am.passes.rectifier.proxy_rectifier`;
        a zero-slope top is the ``upper`` it computes as ``upper + 0 * (x - upper)`` (one
        ``clamp_max`` instead of four passes; only ``x = inf`` would differ, NaN there).
        """
        y = functional.leaky_relu(x, beta)
        if self.upper is None:
            return y
        if not self.decouple_upper:
            return y.clamp_max_(self.upper)
        return torch.where(x < self.upper, y, self.upper + beta * (x - self.upper))

    def grad(self, g: torch.Tensor, saved: torch.Tensor, span: Span, out: torch.Tensor | None):
        """The gradient of one span's rows (written into ``out`` when given)."""
        if span.kind == "alpha":
            op, args = self.alpha_grad
            return _kernel(op, out, g, saved, *args)
        grad = _kernel(_aten.leaky_relu_backward, out, g, saved, span.slope, False)
        if self.upper is None:
            return grad
        if self.decouple_upper:
            top = torch.where(saved >= self.upper, g * span.slope, grad)
            return top if out is None else out.copy_(top)
        # Zero where saved >= upper, in place: hardtanh_backward's test with no lower bound.
        return _kernel(_aten.hardtanh_backward, grad, grad, saved, -math.inf, self.upper)


def _kernel(op, out: torch.Tensor | None, *args):
    """``op(*args)``, or its ``grad_input=out`` variant."""
    if out is None:
        return op.default(*args)
    return op.grad_input(*args, grad_input=out)


@dataclass(frozen=True)
class SpanPlan:
    """What :class:`SpansGradient` needs besides ``x``, worked out once per slopes and dtype.

    Attributes:
        spans: the spans, slopes rounded to the input's dtype.
        rule: the module's :class:`SpanRule`.
        proxy: whether some span is a proxy span (the forward is then assembled per span).
    """

    spans: tuple[Span, ...]
    rule: SpanRule
    proxy: bool


class SpansGradient(torch.autograd.Function):
    """The rectifier over spans of rows: original (or proxy) forward, per-span fused backward.

    Called as ``SpansGradient.apply(x, module, plan)`` with a :class:`SpanPlan`; ``module`` is the
    :class:`~onnx_am.passes.rectifier.DecoupledRectifier` (its ``true_forward``; not imported
    here, as rectifier.py imports this module).
    """

    @staticmethod
    def forward(ctx, x, module: torch.nn.Module, plan: SpanPlan):  # noqa: D102
        rule, spans = plan.rule, plan.spans
        if not plan.proxy:
            y = module.true_forward(x)
        elif len(spans) == 1:
            y = rule.proxy_value(x, spans[0].slope)
        else:
            y = torch.empty_like(x)
            for span in spans:
                part = x[span.start : span.stop]
                if span.kind == "proxy":
                    value = rule.proxy_value(part, span.slope)
                else:
                    value = module.true_forward(part)
                y[span.start : span.stop] = value
        ctx.save_for_backward(y if rule.saves_output else x)
        ctx.rule, ctx.spans = rule, spans
        return y

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        (saved,) = ctx.saved_tensors
        rule, spans = ctx.rule, ctx.spans
        if len(spans) == 1:
            return rule.grad(g, saved, spans[0], None), None, None
        out = torch.empty_like(saved)
        for span in spans:
            rows = slice(span.start, span.stop)
            rule.grad(g[rows], saved[rows], span, out[rows])
        return out, None, None
