"""Activations onnx2torch lacks: Mish, Gelu (opset 20), ThresholdedRelu."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import (
    OnnxToTorchModule,
    OperationConverterResult,
    onnx_mapping_from_node,
)
from torch import nn

from onnx_am.importer.converters._registry import register


class OnnxMish(nn.Module, OnnxToTorchModule):
    """``x * tanh(softplus(x))``."""

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        return F.mish(input_tensor)


class OnnxGelu(nn.Module, OnnxToTorchModule):
    """Gelu with ``approximate`` ``"none"`` (erf) or ``"tanh"``."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        return F.gelu(input_tensor, approximate=self.approximate)


class OnnxThresholdedRelu(nn.Module, OnnxToTorchModule):
    """``x if x > alpha else 0``."""

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        return torch.where(input_tensor > self.alpha, input_tensor, torch.zeros_like(input_tensor))


def _result(module: nn.Module, node: OnnxNode) -> OperationConverterResult:
    return OperationConverterResult(torch_module=module, onnx_mapping=onnx_mapping_from_node(node))


@register("Mish", (18, 22))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _result(OnnxMish(), node)


@register("Gelu", (20,))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    approximate = node.attributes.get("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise NotImplementedError(f"Gelu with approximate={approximate!r} is not supported")
    return _result(OnnxGelu(approximate), node)


@register("ThresholdedRelu", (10, 22))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _result(OnnxThresholdedRelu(float(node.attributes.get("alpha", 1.0))), node)
