"""Ops of transformer exports that onnx2torch lacks or gets wrong: OneHot, Trilu, CumSum,
onnxruntime's Gelu family.

``OneHot`` builds the one-hot of a byte or token input inside the graph (torch's legacy
exporter writes ``F.one_hot`` this way); ``Trilu`` makes causal masks; ``com.microsoft``
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


class OnnxOneHot(nn.Module, OnnxToTorchModule):
    """``OneHot(indices, depth, values)``: negative indices count from ``depth``; indices
    outside ``[-depth, depth)`` give a row of off values (as onnxruntime does)."""

    def __init__(self, axis: int = -1):
        super().__init__()
        self.axis = axis

    def forward(
        self, indices: torch.Tensor, depth: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        size = int(depth.reshape(-1)[0])
        index = indices.long()
        index = torch.where(index < 0, index + size, index)
        classes = torch.arange(size, device=indices.device)
        hot = index.unsqueeze(-1) == classes
        axis = self.axis if self.axis >= 0 else self.axis + indices.dim() + 1
        hot = torch.movedim(hot, -1, axis)
        return torch.where(hot, values[1], values[0])


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


@register("OneHot", (9, 11))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _result(OnnxOneHot(int(node.attributes.get("axis", -1))), node)


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
