"""GELU as the exporters write it before opset 20: a subgraph of ``Erf`` or ``Tanh`` ops.

torch's legacy exporter writes ``nn.GELU()`` as ``Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)),
0.5)``; the dynamo exporter as ``Mul(x, Mul(0.5, Add(Erf(...), 1)))``; the tanh form
(``gelu_new`` in ``transformers``, T5) as ``Mul(Mul(0.5, x), Add(1, Tanh(...)))``. No
``Gelu`` node exists, so the ``gelu`` rule never sees these.

This rule looks at each ``Mul`` whose input is ``u = c * x`` (``c`` a power of two, usually
1) and whose output is ``k * gelu(x)`` (``k`` a power of two), checked by evaluating the
subgraph between ``x`` and the ``Mul`` in float64 on a grid (so every operand order and
constant spelling is found, and nothing else is): only ``Mul``, ``Div``, ``Add``, ``Sub``,
``Erf``, ``Tanh``, ``Pow``, ``Sqrt`` and scalar constants may lie between. The replacement
computes the same forward bit for bit (``y / k * k`` and ``u / c`` are exact for powers of
two) and sends ``grad * k * max(gelu'(x), beta)`` to ``u / c`` alone; the ``Erf`` / ``Tanh``
branch gets no gradient of its own (the derivative already counts it), as in the SiLU rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation

from onnx_am.passes.base import RuleMatch, constant_value
from onnx_am.passes.gelu import gelu_derivative, gelu_tanh_derivative
from onnx_am.passes.registry import register_rule
from onnx_am.passes.smooth import (
    SMOOTH_RULES,
    DecoupledSmooth,
    FlooredGradient,
    SmoothRule,
    derivative_minimum,
)

_UNARY = {"Erf": np.vectorize(math.erf), "Tanh": np.tanh, "Sqrt": np.sqrt}
_BINARY = {
    "Mul": np.multiply,
    "Div": np.divide,
    "Add": np.add,
    "Sub": np.subtract,
    "Pow": np.power,
}
_MAX_NODES = 16
_GRID = np.linspace(-5.0, 5.0, 41)
_ERF_GRID = np.vectorize(math.erf)(_GRID / math.sqrt(2))


def _gelu(x: np.ndarray, approximate: str) -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + _ERF_GRID)


@dataclass(frozen=True)
class GeluForm:
    """How a ``Mul`` node computes GELU.

    Attributes:
        x_index: which input of the ``Mul`` is ``u = input_scale * x``.
        input_scale: ``c``; output_scale: ``k`` (``y = k * gelu(x)``), both powers of two.
        approximate: ``"none"`` (erf) or ``"tanh"``.
    """

    x_index: int
    input_scale: float
    output_scale: float
    approximate: str


def gelu_form(node: onnx.NodeProto, graph: onnx.GraphProto) -> GeluForm | None:
    """The :class:`GeluForm` of a ``Mul`` node, or ``None`` when it does not compute GELU."""
    if node.op_type != "Mul" or len(node.input) != 2:
        return None
    producers = {out: n for n in graph.node for out in n.output}
    for index in (0, 1):
        for x, scale in _candidates(node.input[index], producers, graph):
            values = _evaluate(node, x, producers, graph)
            if values is None:
                continue
            form = _fit(values, index, scale)
            if form is not None:
                return form
    return None


def _candidates(u: str, producers: dict, graph: onnx.GraphProto) -> list[tuple[str, float]]:
    """``(x, c)`` with ``u = c * x``: ``u`` itself, and the other operand of a scaling Mul/Div."""
    found = [(u, 1.0)]
    node = producers.get(u)
    if node is not None and node.op_type in ("Mul", "Div") and len(node.input) == 2:
        for index in (0, 1):
            value = _scalar(graph, node.input[index])
            if value is None or value == 0 or (node.op_type == "Div" and index == 0):
                continue
            scale = value if node.op_type == "Mul" else 1 / value
            if math.frexp(scale)[0] == 0.5:  # a power of two: u / c is exact
                found.append((node.input[1 - index], scale))
    return found


def _scalar(graph: onnx.GraphProto, name: str) -> float | None:
    value = constant_value(graph, name)
    if value is None or value.size != 1 or not np.issubdtype(value.dtype, np.floating):
        return None
    return float(value.reshape(-1)[0])


def _evaluate(
    node: onnx.NodeProto, x: str, producers: dict, graph: onnx.GraphProto
) -> np.ndarray | None:
    """``node``'s output on :data:`_GRID` as a function of ``x`` (float64), else ``None``."""
    memo: dict[str, np.ndarray] = {x: _GRID}
    budget = [_MAX_NODES]

    def value(name: str) -> np.ndarray | None:
        if name in memo:
            return memo[name]
        scalar = _scalar(graph, name)
        if scalar is not None:
            return np.float64(scalar)
        source = producers.get(name)
        if source is None or budget[0] <= 0:
            return None
        budget[0] -= 1
        return compute(source)

    def compute(source: onnx.NodeProto) -> np.ndarray | None:
        if source.domain not in ("", "ai.onnx"):
            return None
        args = [value(name) for name in source.input]
        if any(arg is None for arg in args):
            return None
        if source.op_type in _UNARY and len(args) == 1:
            result = _UNARY[source.op_type](args[0])
        elif source.op_type in _BINARY and len(args) == 2:
            result = _BINARY[source.op_type](args[0], args[1])
        else:
            return None
        memo[source.output[0]] = result
        return result

    with np.errstate(all="ignore"):
        result = compute(node)
    if result is None or np.shape(result) != _GRID.shape:
        return None  # a constant, or not a function of x
    return result


def _fit(values: np.ndarray, x_index: int, input_scale: float) -> GeluForm | None:
    """``values == k * gelu(grid)`` for a power of two ``k``, erf form first."""
    for approximate in ("none", "tanh"):
        reference = _gelu(_GRID, approximate)
        ratio = float(values[-1] / reference[-1])
        if not np.isfinite(ratio) or ratio <= 0:
            return None
        scale = 2.0 ** round(math.log2(ratio))
        if np.allclose(values, scale * reference, rtol=1e-6, atol=1e-6 * scale):
            return GeluForm(x_index, input_scale, scale, approximate)
    return None


class DecoupledGeluSubgraph(DecoupledSmooth):
    """The matched ``Mul``: forward unchanged; backward floored GELU derivative to ``u / c``."""

    def __init__(self, node, op_type, alpha, source_module, derivative, form: GeluForm):
        super().__init__(node, op_type, alpha, source_module, derivative, form.x_index)
        self.input_scale = form.input_scale
        self.output_scale = form.output_scale

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:  # noqa: D102
        slopes = self.backward_slope if self.backward_slope is not None else self.forward_slope
        if slopes is None:
            return self.true_forward(*inputs)
        x = self.rectified_input(*inputs) / self.input_scale
        self.plan().check(x)
        with torch.no_grad():
            y = self.true_forward(*inputs) / self.output_scale
        floor = slopes.to(dtype=x.dtype, device=x.device).view(-1, *([1] * (x.dim() - 1)))
        return FlooredGradient.apply(y, x, floor, self.derivative) * self.output_scale


_ALPHA = {
    "none": derivative_minimum(gelu_derivative),
    "tanh": derivative_minimum(gelu_tanh_derivative),
}


@register_rule("gelu_subgraph")
class GeluSubgraphRule(SmoothRule):
    """The ``Mul`` that completes a decomposed (erf or tanh) GELU."""

    op_type = "Mul"
    module_types = (OnnxBinaryMathOperation,)

    def match_node(self, node, graph):  # noqa: D102
        form = gelu_form(node, graph)
        if form is None:
            return None
        return RuleMatch(alpha=_ALPHA[form.approximate], details={"form": form})

    def build(self, node, module, match, *, decouple_upper=False):  # noqa: D102
        form = match.details["form"]
        derivative = gelu_tanh_derivative if form.approximate == "tanh" else gelu_derivative
        return DecoupledGeluSubgraph(node.name, node.op_type, match.alpha, module, derivative, form)


SMOOTH_RULES.append("gelu_subgraph")
