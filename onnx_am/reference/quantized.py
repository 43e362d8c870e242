"""The agreement a quantized model allows: one rounding step of its integer type.

onnx-am computes quantized ops as onnxruntime does (same rounding, exact integer sums), and
on the tested models the values are identical. But a value that lands on a rounding tie in
one runtime and a hair off it in the other moves by one quantization step, and that step
propagates. So when a model quantizes (QuantizeLinear, DynamicQuantizeLinear, QLinear*,
onnxruntime's DynamicQuantizeLSTM), the tolerance of the parity check and of the onnxruntime
cross-check is at least one step of the narrowest integer type it quantizes to, relative to
the compared tensor's magnitude: ``2**-8`` for 8-bit, ``2**-16`` for 16-bit types.
"""

from __future__ import annotations

import onnx

from onnx_am.importer.converters.onnxruntime_math import ROUNDING_OPS

#: Ops whose output is rounded to an integer grid (the graphs the importer also gives
#: onnxruntime's own sigmoid and tanh, see :mod:`onnx_am.importer.converters.onnxruntime_math`).
QUANTIZING_OPS = ROUNDING_OPS

#: ONNX element type -> bits.
_BITS = {
    onnx.TensorProto.UINT8: 8,
    onnx.TensorProto.INT8: 8,
    onnx.TensorProto.UINT16: 16,
    onnx.TensorProto.INT16: 16,
}


def quantization_tolerance(model: onnx.ModelProto) -> tuple[float, str] | None:
    """``(relative tolerance, reason)`` implied by the model's quantization, else ``None``."""
    quantizing = [node for node in model.graph.node if node.op_type in QUANTIZING_OPS]
    if not quantizing:
        return None
    types = {tensor.name: tensor.data_type for tensor in model.graph.initializer}
    bits = 16
    for node in quantizing:
        zero_point = _zero_point(node)
        bits = min(bits, _BITS.get(types.get(zero_point, onnx.TensorProto.UINT8), 8))
    ops = ", ".join(sorted({node.op_type for node in quantizing}))
    return 2.0**-bits, f"{bits}-bit quantization ({ops}): one step of 2^-{bits} relative"


def _zero_point(node: onnx.NodeProto) -> str:
    index = {"QuantizeLinear": 2, "QLinearConv": 7, "QLinearMatMul": 7}.get(node.op_type)
    if index is None or len(node.input) <= index:
        return ""
    return node.input[index]


def effective_tolerance(model: onnx.ModelProto, tolerance: float) -> tuple[float, str]:
    """``max(tolerance, the quantization's)`` and why (empty when the given one stands)."""
    implied = quantization_tolerance(model)
    if implied is None or implied[0] <= tolerance:
        return tolerance, ""
    return implied


__all__ = ["QUANTIZING_OPS", "effective_tolerance", "quantization_tolerance"]
