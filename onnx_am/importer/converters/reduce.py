"""Reduce* ops from opset 18 on, where ``axes`` moved from an attribute to an input."""

from __future__ import annotations

import torch
from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
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

REDUCE_OPS = (
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
)


class OnnxIdentity(nn.Module, OnnxToTorchModule):
    """Returns its input (a reduction with empty axes and ``noop_with_empty_axes=1``)."""

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        return input_tensor


def constant_axes(node: OnnxNode, graph: OnnxGraph, index: int = 1) -> list[int] | None:
    """The constant int list fed to input ``index`` of ``node``; ``None`` when absent.

    Raises:
        NotImplementedError: the input is computed at run time.
    """
    if len(node.input_values) <= index or not node.input_values[index]:
        return None
    try:
        value = get_const_value(node.input_values[index], graph)
    except KeyError as exc:
        raise NotImplementedError(
            f"{node.operation_type} with non-constant input {node.input_values[index]!r}"
        ) from exc
    return [int(v) for v in torch.as_tensor(value).reshape(-1).tolist()]


def _reduce_converter(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    axes = constant_axes(node, graph)
    keepdims = node.attributes.get("keepdims", 1)
    noop = node.attributes.get("noop_with_empty_axes", 0)
    if not axes and noop:
        module: nn.Module = OnnxIdentity()
    else:
        module = OnnxReduceStaticAxes(
            operation_type=node.operation_type, axes=axes or None, keepdims=keepdims
        )
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values),
    )


for _op in REDUCE_OPS:
    register(_op, (18, 20) if _op in ("ReduceMax", "ReduceMin") else (18,))(_reduce_converter)
