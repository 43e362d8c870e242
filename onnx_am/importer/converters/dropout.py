"""``Dropout`` with its ``mask`` output (Caffe2-era exports name it even when unused).

onnx2torch converts Dropout to a module with one output; with a second output listed, the
graph then takes "output 1" by indexing that tensor, i.e. its second *row*, and everything
after it sees a tensor of one rank less (SqueezeNet of the old model zoo failed with
"Dimension out of range"). In inference Dropout is the identity and its mask is all true,
which is what :class:`OnnxDropoutWithMask` returns.
"""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

from onnx_am.importer.converters._registry import Converter, replace


class OnnxDropoutWithMask(nn.Module, OnnxToTorchModule):
    """Inference Dropout: ``(x, all-true mask)``."""

    def forward(self, input_tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return input_tensor, torch.ones_like(input_tensor, dtype=torch.bool)


@replace("Dropout", (10, 12, 13))
def _(node: OnnxNode, graph: OnnxGraph, fallback: Converter) -> OperationConverterResult:
    if len(node.output_values) < 2 or not node.output_values[1]:
        return fallback(node, graph)
    return OperationConverterResult(
        torch_module=OnnxDropoutWithMask(),
        onnx_mapping=OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values),
    )
