"""Pre-pass for quantized models: constant weights behind DequantizeLinear become floats."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnx_am.importer.prepare.util import attributes


def dequantize_constant_weights(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Replace ``DequantizeLinear(int initializer, scale, zero point)`` by its float value.

    QDQ models keep weights as int8 initializers behind a ``DequantizeLinear``; onnx2torch
    builds Conv/Gemm layers only from initializers. The value is computed as onnxruntime
    computes it, ``float32(x - zero_point) * scale`` (one rounding), so it is bit-identical;
    the tensor keeps the node's output name.
    """
    graph = model.graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    kept, folded = [], 0
    for node in graph.node:
        value = _dequantized(node, constants) if node.op_type == "DequantizeLinear" else None
        if value is None:
            kept.append(node)
            continue
        tensor = numpy_helper.from_array(value, node.output[0])
        graph.initializer.append(tensor)
        constants[tensor.name] = tensor
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(kept)
    return model, [f"dequantized {folded} constant weight tensor(s)"] if folded else []


def _dequantized(node: onnx.NodeProto, constants: dict) -> np.ndarray | None:
    names = [name for name in node.input if name]
    if node.domain not in ("", "ai.onnx") or any(name not in constants for name in names):
        return None
    attrs = attributes(node)
    if attrs.get("block_size", 0):
        return None
    x = numpy_helper.to_array(constants[node.input[0]])
    scale = numpy_helper.to_array(constants[node.input[1]])
    if scale.dtype != np.float32 or x.dtype.kind not in "iu":
        return None
    zero = numpy_helper.to_array(constants[node.input[2]]) if len(names) > 2 else np.zeros(())
    if scale.size > 1:
        axis = attrs.get("axis", 1) % x.ndim
        shape = [-1 if d == axis else 1 for d in range(x.ndim)]
        scale, zero = scale.reshape(shape), zero.reshape(shape) if zero.size > 1 else zero
    shifted = (x.astype(np.int64) - zero.astype(np.int64)).astype(np.float32)
    return (shifted * scale).astype(np.float32)
