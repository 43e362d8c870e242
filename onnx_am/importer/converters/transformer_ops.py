"""Ops of transformer exports that onnx2torch lacks or gets wrong: Trilu, CumSum, onnxruntime's
Gelu family (``OneHot``, which byte models use to build their one-hot inside the graph, is in
:mod:`~onnx_am.importer.converters.onehot`).

``Trilu`` makes causal masks; ``com.microsoft``
``Gelu`` / ``FastGelu`` / ``BiasGelu`` are what onnxruntime's transformer optimizer fuses the
GELU subgraphs into. onnx2torch's ``CumSum`` reads a missing ``reverse`` attribute as 1
(the ONNX default is 0), so a mask's running sum (padding-aware position ids) came out
reversed; it is replaced. They convert to :class:`~onnx_am.importer.converters.activations.
OnnxGelu` (with a bias added first where the op has one), so the opt-in decoupled ``gelu``
rule applies to them.
"""

from __future__ import annotations

import torch
from onnx2torch.node_converters.cumsum import OnnxCumSum
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import (
    OnnxMapping,
    OnnxToTorchModule,
    OperationConverterResult,
    onnx_mapping_from_node,
)
from torch import nn

from onnx_am.importer.converters._registry import Converter, register, replace
from onnx_am.importer.converters.activations import OnnxGelu

MICROSOFT = "com.microsoft"


class OnnxTrilu(nn.Module, OnnxToTorchModule):
    """``Trilu(x, k)``: upper (default) or lower triangle of the last two dims."""

    def __init__(self, upper: bool = True):
        super().__init__()
        self.upper = upper

    def forward(self, x: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
        diagonal = int(k.reshape(-1)[0]) if k is not None else 0
        return torch.triu(x, diagonal) if self.upper else torch.tril(x, diagonal)


class OnnxBiasGelu(nn.Module, OnnxToTorchModule):
    """``gelu(x + bias)``; the GELU is an :class:`OnnxGelu` child (the gelu rule's target)."""

    def __init__(self, approximate: str):
        super().__init__()
        self.gelu = OnnxGelu(approximate)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.gelu(x + bias)


def _result(module: nn.Module, node: OnnxNode) -> OperationConverterResult:
    return OperationConverterResult(torch_module=module, onnx_mapping=onnx_mapping_from_node(node))


@register("Trilu", (14,))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _result(OnnxTrilu(bool(node.attributes.get("upper", 1))), node)


@replace("CumSum", (11, 14))
def _(
    node: OnnxNode, graph: OnnxGraph, fallback: Converter | None = None
) -> OperationConverterResult:
    exclusive = bool(node.attributes.get("exclusive", 0))
    reverse = bool(node.attributes.get("reverse", 0))
    return _result(OnnxCumSum(exclusive, reverse), node)


def _gelu(node: OnnxNode, approximate: str) -> OperationConverterResult:
    """Gelu alone, or with its optional bias (second input) as :class:`OnnxBiasGelu`."""
    inputs = [name for name in node.input_values if name]
    if len(inputs) == 1:
        return _result(OnnxGelu(approximate), node)
    mapping = OnnxMapping(inputs=tuple(inputs[:2]), outputs=node.output_values)
    return OperationConverterResult(torch_module=OnnxBiasGelu(approximate), onnx_mapping=mapping)


@register("Gelu", (1,), domain=MICROSOFT)
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _gelu(node, "none")


@register("BiasGelu", (1,), domain=MICROSOFT)
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _gelu(node, "none")


@register("FastGelu", (1,), domain=MICROSOFT)
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _gelu(node, "tanh")
