"""Split-18: the output count may come from ``num_outputs`` (uneven last chunk allowed)."""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

from onnx_am.importer.converters._registry import register
from onnx_am.importer.converters.reduce import constant_axes


class OnnxSplit18(nn.Module, OnnxToTorchModule):
    """Split along ``axis`` into given sizes, or into ``num_outputs`` ceil-sized chunks."""

    def __init__(self, axis: int, num_outputs: int, sizes: list[int] | None = None):
        super().__init__()
        self.axis = axis
        self.num_outputs = num_outputs
        self.sizes = sizes

    def forward(self, input_tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.sizes is not None:
            return tuple(torch.split(input_tensor, self.sizes, dim=self.axis))
        length = input_tensor.shape[self.axis]
        chunk = -(-length // self.num_outputs)
        return tuple(torch.split(input_tensor, chunk, dim=self.axis))


@register("Split", (18,))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    sizes = constant_axes(node, graph)
    num_outputs = node.attributes.get("num_outputs", len(node.output_values))
    module = OnnxSplit18(node.attributes.get("axis", 0), num_outputs, sizes)
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values),
    )
