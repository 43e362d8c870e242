"""``Clip`` whose ``min`` / ``max`` are computed in the graph (``Clip(x, ReduceMax(x) - 80)``).

onnx2torch converts only constant bounds; those keep its modules (``ReLU``, ``ReLU6``,
``OnnxClip``), which the decoupling pass recognizes. Computed bounds become
:class:`OnnxDynamicClip`, which takes them as inputs; the pass leaves it alone (reported as
an untouched ``Clip``). A bound left out by an empty name (``Clip(x, 1.0, "")``, as the torch
exporter writes ``clamp(min=1)``), which onnx2torch reads as a missing constant, is no bound.
Gradients flow to ``x`` inside the bounds and to a bound where it clips, as ``torch.clamp``
gives them.
"""

from __future__ import annotations

import torch
from onnx2torch.node_converters.clip import OnnxClip
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import (
    OnnxMapping,
    OnnxToTorchModule,
    OperationConverterResult,
    get_const_value,
)
from torch import nn

from onnx_am.importer.converters._registry import Converter, replace


class OnnxDynamicClip(nn.Module, OnnxToTorchModule):
    """``min(max(x, low), high)`` with tensor bounds (``None``: no bound), as onnxruntime."""

    def forward(
        self,
        input_tensor: torch.Tensor,
        low: torch.Tensor | None = None,
        high: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if low is not None:
            input_tensor = torch.maximum(input_tensor, low.to(input_tensor.dtype))
        if high is not None:
            input_tensor = torch.minimum(input_tensor, high.to(input_tensor.dtype))
        return input_tensor


def _constant(name: str, graph: OnnxGraph) -> bool:
    if not name:
        return True
    try:
        get_const_value(name, graph)
    except KeyError:
        return False
    return True


@replace("Clip", (11, 12, 13))
def _(node: OnnxNode, graph: OnnxGraph, fallback: Converter) -> OperationConverterResult:
    bounds = list(node.input_values[1:3])
    if all(_constant(name, graph) for name in bounds):
        if "" not in bounds:
            return fallback(node, graph)
        low, high = (float(get_const_value(n, graph)) if n else None for n in [*bounds, ""][:2])
        return OperationConverterResult(
            torch_module=_constant_clip(low, high),
            onnx_mapping=OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values),
        )
    inputs = (node.input_values[0], *bounds, *[""] * (2 - len(bounds)))
    return OperationConverterResult(
        torch_module=OnnxDynamicClip(),
        onnx_mapping=OnnxMapping(inputs=inputs, outputs=node.output_values),
    )


def _constant_clip(low: float | None, high: float | None) -> nn.Module:
    """onnx2torch's modules for constant bounds (``ReLU`` and ``ReLU6`` where they fit)."""
    if low is None and high is None:
        return nn.Identity()
    if low == 0 and high is None:
        return nn.ReLU()
    if low == 0 and high == 6:
        return nn.ReLU6()
    return OnnxClip(min_val=low, max_val=high)
