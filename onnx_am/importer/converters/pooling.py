"""Pooling onnx2torch lacks: AveragePool-19/22 (``dilations``), GlobalMaxPool."""

from __future__ import annotations

import torch
from onnx2torch.node_converters import get_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import (
    OnnxToTorchModule,
    OperationConverterResult,
    onnx_mapping_from_node,
)
from torch import nn

from onnx_am.importer.converters._registry import register


class OnnxGlobalMaxPool(nn.Module, OnnxToTorchModule):
    """Max over all spatial dims, keeping them as size 1."""

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, input_tensor.dim()))
        return torch.amax(input_tensor, dim=dims, keepdim=True)


@register("GlobalMaxPool", (1, 22))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(
        torch_module=OnnxGlobalMaxPool(), onnx_mapping=onnx_mapping_from_node(node)
    )


@register("AveragePool", (19, 22))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    dilations = node.attributes.get("dilations")
    if dilations is not None and any(d != 1 for d in dilations):
        raise NotImplementedError(f"AveragePool with dilations={list(dilations)} is not supported")
    return get_converter(operation_type="AveragePool", version=11)(node, graph)
