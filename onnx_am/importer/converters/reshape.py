"""``Reshape`` with ``allowzero=1`` whose shape is computed in the graph.

The dynamo exporter writes ``allowzero=1`` on every Reshape. Where the shape is a constant
without zeros the attribute changes nothing and a pre-pass clears it
(:func:`onnx_am.importer.prepare.reshape.drop_needless_allowzero`); where the shape is
computed (``Concat(Shape(x)[0], -1, 12, 32)`` in graphs exported with dynamic axes) onnx2torch
refuses the node. ``allowzero=1`` means what ``torch.reshape`` does: a 0 in the shape is a
zero-size dimension, not a copy of the input's, so :class:`OnnxReshapeAllowZero` passes the
shape on as it is.
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


class OnnxReshapeAllowZero(nn.Module, OnnxToTorchModule):
    """``torch.reshape(x, shape)`` with the shape taken literally (ONNX ``allowzero=1``)."""

    def forward(self, input_tensor: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        return torch.reshape(input_tensor, [int(size) for size in shape.tolist()])


@replace("Reshape", (5, 13, 14, 19, 21))
def _(node: OnnxNode, graph: OnnxGraph, fallback: Converter) -> OperationConverterResult:
    if node.attributes.get("allowzero", 0) != 1:
        return fallback(node, graph)
    return OperationConverterResult(
        torch_module=OnnxReshapeAllowZero(), onnx_mapping=onnx_mapping_from_node(node=node)
    )
