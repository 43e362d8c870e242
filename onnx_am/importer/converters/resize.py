"""Resize-18/19: handled by onnx2torch's Resize-13 converter when the new options are unused."""

from __future__ import annotations

from onnx2torch.node_converters import get_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnx_am.importer.converters._registry import register

#: Attributes added in opsets 18/19 and the value under which Resize-13 semantics hold.
NEW_DEFAULTS = {"antialias": 0, "axes": None, "keep_aspect_ratio_policy": "stretch"}


@register("Resize", (18, 19))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    for name, default in NEW_DEFAULTS.items():
        value = node.attributes.get(name, default)
        if value != default:
            raise NotImplementedError(f"Resize with {name}={value!r} is not supported")
    mode = node.attributes.get("coordinate_transformation_mode", "half_pixel")
    if mode == "half_pixel_symmetric":
        raise NotImplementedError("Resize with coordinate_transformation_mode=half_pixel_symmetric")
    return get_converter(operation_type="Resize", version=13)(node, graph)
