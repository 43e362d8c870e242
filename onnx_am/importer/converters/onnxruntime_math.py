"""onnxruntime's CPU sigmoid and tanh, bit for bit, for graphs that round to an integer grid.

onnxruntime computes ``Sigmoid`` and ``Tanh`` (also inside its LSTM) with MLAS's rational
approximations (``mlas/lib/logistic.cpp``, ``tanh.cpp``: Eigen's coefficients, evaluated with
fused multiply-adds on x86-64), not with the correctly rounded functions torch uses: the two
differ by about one float32 ulp in most values. That is harmless in a float graph, but a graph
that quantizes dynamically takes each tensor's range as its scale, so one ulp moves a scale,
flips values that sit near a rounding tie by a whole step, and the flips cascade through the
following layers (on ddddocr's ``common_old.onnx``: 0.7 % of the output's scale).

So in a graph with rounding ops, ``Sigmoid`` and ``Tanh`` compute MLAS's approximation: the
same clamping, polynomial and division, every fused multiply-add evaluated in float64 and
rounded once to float32 (bit-identical to onnxruntime on 10^6 random inputs on the AVX-512 /
FMA machine this was written on). The backward is the true function's derivative. Other
graphs keep torch's functions (onnx2torch's converters).
"""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import (
    OnnxToTorchModule,
    OperationConverterResult,
    onnx_mapping_from_node,
)
from torch import nn

from onnx_am.importer.converters._registry import Converter, replace

#: Op types whose output is rounded to an integer grid (graphs that need the exact functions).
ROUNDING_OPS = frozenset(
    {
        "QuantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "DynamicQuantizeLSTM",
    }
)


def _float32(values: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(torch.tensor(values, dtype=torch.float32).tolist())


#: MLAS's constants: input bound, numerator and denominator coefficients (highest first).
_LOGISTIC = (
    18.0,
    _float32((4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05,
              8.51377133304701e-03, 2.48287947061529e-01)),
    _float32((6.10247389755681e-13, 5.76102136993427e-09, 6.29106785017040e-06,
              1.70198817374094e-03, 1.16817656904453e-01, 9.93151921023180e-01)),
)  # fmt: skip
_TANH = (
    9.0,
    _float32((-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
              5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
              4.89352455891786e-03)),
    _float32((1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
              4.89352518554385e-03)),
)  # fmt: skip


def _horner(squared: torch.Tensor, coefficients: tuple[float, ...]) -> torch.Tensor:
    """``((c0 * s + c1) * s + c2) ...`` with every multiply-add rounded once to float32, as a
    fused multiply-add rounds (``squared`` is float64 holding float32 values: the product of
    two float32 values is exact in float64, the one rounding is the cast back)."""
    value = (squared * coefficients[0] + coefficients[1]).float()
    for coefficient in coefficients[2:]:
        value = torch.addcmul(squared.new_tensor(coefficient), value.double(), squared).float()
    return value


def _rational(x: torch.Tensor, constants) -> torch.Tensor:
    bound, alphas, betas = constants
    value = torch.clamp(x, -bound, bound)
    squared = (value * value).double()
    return (_horner(squared, alphas) * value) / _horner(squared, betas)


class _OnnxruntimeLogistic(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: D102
        ctx.save_for_backward(x)
        return torch.clamp(_rational(x, _LOGISTIC) + 0.5, 0.0, 1.0)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x) * torch.sigmoid(-x)  # s (1 - s), without cancellation


class _OnnxruntimeTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: D102
        ctx.save_for_backward(x)
        return _rational(x, _TANH)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (x,) = ctx.saved_tensors
        return grad / torch.cosh(x) ** 2  # 1 - tanh^2, without cancellation (0 past overflow)


def onnxruntime_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """onnxruntime's CPU float32 ``Sigmoid`` forward; the true sigmoid's derivative backward.
    Other dtypes (which onnxruntime does not compute with MLAS) get ``torch.sigmoid``."""
    return _OnnxruntimeLogistic.apply(x) if x.dtype == torch.float32 else torch.sigmoid(x)


def onnxruntime_tanh(x: torch.Tensor) -> torch.Tensor:
    """onnxruntime's CPU float32 ``Tanh`` forward; the true tanh's derivative backward.
    Other dtypes get ``torch.tanh``."""
    return _OnnxruntimeTanh.apply(x) if x.dtype == torch.float32 else torch.tanh(x)


class OnnxruntimeSigmoid(nn.Module, OnnxToTorchModule):
    """``Sigmoid`` as onnxruntime's CPU kernel computes it (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return onnxruntime_sigmoid(x)


class OnnxruntimeTanh(nn.Module, OnnxToTorchModule):
    """``Tanh`` as onnxruntime's CPU kernel computes it (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return onnxruntime_tanh(x)


def rounds(graph: OnnxGraph) -> bool:
    """Whether the graph has an op that rounds to an integer grid."""
    return any(node.operation_type in ROUNDING_OPS for node in graph.nodes.values())


def _exact_in_rounding_graphs(module_type: type[nn.Module]):
    def converter(
        node: OnnxNode, graph: OnnxGraph, fallback: Converter
    ) -> OperationConverterResult:
        if not rounds(graph):
            return fallback(node, graph)
        return OperationConverterResult(
            torch_module=module_type(), onnx_mapping=onnx_mapping_from_node(node)
        )

    return converter


replace("Sigmoid", (1, 6, 13))(_exact_in_rounding_graphs(OnnxruntimeSigmoid))
replace("Tanh", (6, 13))(_exact_in_rounding_graphs(OnnxruntimeTanh))
