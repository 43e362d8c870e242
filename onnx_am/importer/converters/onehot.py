"""``OneHot`` (paddle2onnx decoders emit it inside ``Loop`` bodies): onnx2torch has none.

``values = [off, on]``; ``depth`` is read at run time; negative indices count from
``depth`` back, as onnxruntime does; indices outside ``[-depth, depth)`` give all ``off``.
The output is not differentiable in the indices (integers).
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

from onnx_am.importer.converters._registry import register


class OnnxOneHot(nn.Module, OnnxToTorchModule):
    """One-hot along ``axis``, filled with ``values[0]`` and ``values[1]``."""

    def __init__(self, axis: int = -1):
        super().__init__()
        self.axis = axis

    def forward(
        self, indices: torch.Tensor, depth: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        size = int(depth.reshape(-1)[0])
        index = indices.long()
        index = torch.where(index < 0, index + size, index)
        hot = index.unsqueeze(-1) == torch.arange(size, device=index.device)
        axis = self.axis if self.axis >= 0 else self.axis + indices.dim() + 1
        hot = hot.movedim(-1, axis)
        off, on = values.reshape(-1)[0], values.reshape(-1)[1]
        return torch.where(hot, on, off)


@register("OneHot", (9, 11))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(
        torch_module=OnnxOneHot(int(node.attributes.get("axis", -1))),
        onnx_mapping=onnx_mapping_from_node(node),
    )
