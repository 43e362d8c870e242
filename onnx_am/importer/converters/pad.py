"""Pad-18/19/21: optional ``axes`` input (18) and ``wrap`` mode (19)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import (
    OnnxMapping,
    OnnxToTorchModule,
    OperationConverterResult,
    get_const_value,
)
from torch import nn

from onnx_am.importer.converters._registry import register
from onnx_am.importer.converters.reduce import constant_axes

#: ONNX pad mode -> torch.nn.functional.pad mode
PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


class OnnxPadAxes(nn.Module, OnnxToTorchModule):
    """Constant pads (ONNX order: all begins, then all ends) applied to ``axes`` (or all)."""

    def __init__(self, pads: list[int], axes: list[int] | None, mode: str, value: float):
        super().__init__()
        self.pads = pads
        self.axes = axes
        self.mode = mode
        self.value = value

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        rank = input_tensor.dim()
        axes = [a % rank for a in self.axes] if self.axes is not None else list(range(rank))
        half = len(self.pads) // 2
        begin, end = [0] * rank, [0] * rank
        for k, axis in enumerate(axes):
            begin[axis], end[axis] = self.pads[k], self.pads[half + k]
        padded = [d for d in range(rank) if begin[d] or end[d]]
        if not padded:
            return input_tensor
        torch_pads: list[int] = []
        for d in range(rank - 1, min(padded) - 1, -1):
            torch_pads.extend([begin[d], end[d]])
        if self.mode == "constant":
            return F.pad(input_tensor, torch_pads, mode="constant", value=self.value)
        return F.pad(input_tensor, torch_pads, mode=self.mode)


def _constant_scalar(node: OnnxNode, graph: OnnxGraph, index: int) -> float:
    if len(node.input_values) <= index or not node.input_values[index]:
        return 0.0
    try:
        value = get_const_value(node.input_values[index], graph)
    except KeyError as exc:
        raise NotImplementedError(
            f"Pad with non-constant value {node.input_values[index]!r}"
        ) from exc
    return float(torch.as_tensor(value).reshape(-1)[0]) if torch.as_tensor(value).numel() else 0.0


@register("Pad", (18, 19, 21))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    mode = node.attributes.get("mode", "constant")
    if mode not in PAD_MODES:
        raise NotImplementedError(f"Pad mode {mode!r} is not supported")
    pads = constant_axes(node, graph, 1) or []
    module = OnnxPadAxes(
        pads, constant_axes(node, graph, 3), PAD_MODES[mode], _constant_scalar(node, graph, 2)
    )
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values),
    )
