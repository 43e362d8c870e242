"""``ScatterND`` and ``ScatterElements`` with every reduction onnxruntime runs: none, add,
mul (opset 16), max, min (opset 18).

onnx2torch converts only ``reduction="none"`` and stops at opset 16. Here the first ``k``
axes of ``data`` (``k = indices.shape[-1]``) are flattened to one, the indices become
positions along it (negative ones counted from the end), and the updates are written with
``index_put`` / ``index_add`` / ``index_reduce``, all differentiable in ``data`` and
``updates``. With ``reduction="none"`` and repeated indices ONNX leaves the result
undefined; torch keeps one of the writes.
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

from onnx_am.importer.converters._registry import Converter, register, replace

#: ONNX reduction -> ``Tensor.index_reduce`` mode (``none`` and ``add`` are handled apart).
_REDUCE_MODES = {"mul": "prod", "max": "amax", "min": "amin"}
REDUCTIONS = ("none", "add", *_REDUCE_MODES)


class OnnxScatterNDReduce(nn.Module, OnnxToTorchModule):
    """ScatterND with one ONNX ``reduction``."""

    def __init__(self, reduction: str = "none"):
        super().__init__()
        self.reduction = reduction

    def forward(
        self, data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor
    ) -> torch.Tensor:
        depth = indices.shape[-1]
        lead = data.shape[:depth]
        rows = data.reshape(-1, *data.shape[depth:])
        index = indices.reshape(-1, depth).long()
        sizes = torch.tensor(lead, dtype=torch.long, device=index.device)
        index = torch.where(index < 0, index + sizes, index)
        strides = torch.ones(depth, dtype=torch.long, device=index.device)
        for axis in range(depth - 2, -1, -1):
            strides[axis] = strides[axis + 1] * lead[axis + 1]
        position = (index * strides).sum(-1) if depth else index.new_zeros(index.shape[0])
        values = updates.reshape(-1, *data.shape[depth:]).to(data.dtype)
        if self.reduction == "none":
            out = rows.index_put((position,), values)
        elif self.reduction == "add":
            out = rows.index_add(0, position, values)
        else:
            out = rows.index_reduce(0, position, values, _REDUCE_MODES[self.reduction])
        return out.reshape(data.shape)


def _convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    reduction = node.attributes.get("reduction", "none")
    if reduction not in REDUCTIONS:
        raise NotImplementedError(f"ScatterND with reduction={reduction!r} is not supported")
    return OperationConverterResult(
        torch_module=OnnxScatterNDReduce(reduction), onnx_mapping=onnx_mapping_from_node(node)
    )


@replace("ScatterND", (11, 13, 16))
def _(node: OnnxNode, graph: OnnxGraph, fallback: Converter) -> OperationConverterResult:
    return _convert(node, graph)


register("ScatterND", (18,))(_convert)


class OnnxScatterElements(nn.Module, OnnxToTorchModule):
    """ScatterElements along ``axis`` with one ONNX ``reduction`` (negative indices allowed)."""

    def __init__(self, axis: int = 0, reduction: str = "none"):
        super().__init__()
        self.axis = axis
        self.reduction = reduction

    def forward(
        self, data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor
    ) -> torch.Tensor:
        index = indices.long()
        index = torch.where(index < 0, index + data.shape[self.axis], index)
        values = updates.to(data.dtype)
        if self.reduction == "none":
            return data.scatter(self.axis, index, values)
        if self.reduction == "add":
            return data.scatter_add(self.axis, index, values)
        return data.scatter_reduce(self.axis, index, values, _REDUCE_MODES[self.reduction])


@register("ScatterElements", (11, 13, 16, 18))
def _scatter_elements(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    reduction = node.attributes.get("reduction", "none")
    if reduction not in REDUCTIONS:
        raise NotImplementedError(f"ScatterElements with reduction={reduction!r} is not supported")
    module = OnnxScatterElements(int(node.attributes.get("axis", 0)), reduction)
    return OperationConverterResult(torch_module=module, onnx_mapping=onnx_mapping_from_node(node))
