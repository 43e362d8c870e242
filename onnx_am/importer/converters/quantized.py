"""Quantized ops as a float graph: the same values, rounding kept forward, straight-through back.

Quantized tensors (uint8/int8 in ONNX) are carried as float tensors holding the same integer
values, so every op downstream sees what onnxruntime sees. Forward, each op computes what
the ONNX definition says: ``QuantizeLinear`` rounds half to even and saturates; integer
convolutions and matrix products accumulate exactly (in float64: sums of 8-bit products are
integers far below 2^53) and are requantized with the float multiplier
``x_scale * w_scale / y_scale``, as onnxruntime's kernels do.

Backward, rounding is passed straight through (the straight-through estimator: the gradient
of ``round(v)`` is taken as 1), saturation keeps its true zero gradient, and the scale and
zero point that ``DynamicQuantizeLinear`` computes from its input are held constant. So the
gradient of ``Dequantize(Quantize(x))`` is 1 inside the representable range.

Constant weights behind ``DequantizeLinear`` are dequantized into float initializers by the
pre-pass :func:`onnx_am.importer.prepare.quantized.dequantize_constant_weights`, since
onnx2torch builds Conv/Gemm layers only from initializers.
"""

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

#: ONNX integer element type -> (lowest, highest) value.
INTEGER_RANGES = {
    2: (0, 255),  # UINT8
    3: (-128, 127),  # INT8
    4: (0, 65535),  # UINT16
    5: (-32768, 32767),  # INT16
}

#: torch integer dtype -> ONNX element type.
TORCH_TO_ONNX = {torch.uint8: 2, torch.int8: 3, torch.uint16: 4, torch.int16: 5}


class StraightThroughRound(torch.autograd.Function):
    """``round`` half to even (as ONNX rounds) forward; the gradient passes unchanged."""

    @staticmethod
    def forward(ctx, x):  # noqa: D102
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return grad


class StraightThroughClamp(torch.autograd.Function):
    """``clamp`` forward; the gradient passes unchanged (for ranges that contain the tensor
    by construction, where clamping only guards against rounding)."""

    @staticmethod
    def forward(ctx, x, low, high):  # noqa: D102
        return torch.clamp(x, low, high)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return grad, None, None


def quantize(value: torch.Tensor, scale, zero_point, low: int, high: int) -> torch.Tensor:
    """``saturate(round(value / scale) + zero_point)`` with the rounding straight-through."""
    return torch.clamp(StraightThroughRound.apply(value / scale) + zero_point, low, high)


def requantize(acc: torch.Tensor, multiplier, zero_point, low: int, high: int) -> torch.Tensor:
    """``saturate(round(acc * multiplier) + zero_point)``, rounding straight-through."""
    return torch.clamp(StraightThroughRound.apply(acc * multiplier) + zero_point, low, high)


def _along(param: torch.Tensor | None, rank: int, axis: int) -> torch.Tensor | float:
    """A scale or zero point as a float tensor broadcasting along ``axis`` (or a scalar)."""
    if param is None:
        return 0.0
    param = param.to(torch.float32) if not param.is_floating_point() else param
    if param.dim() == 0 or param.numel() == 1 and param.dim() <= 1:
        return param.reshape(())
    axis = axis % rank
    return param.reshape([-1 if d == axis else 1 for d in range(rank)])


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x if x.is_floating_point() else x.to(torch.float32)


class OnnxQuantizeLinear(nn.Module, OnnxToTorchModule):
    """``QuantizeLinear``: integer values in a float tensor; ``low``/``high`` from the type."""

    def __init__(self, axis: int, low: int, high: int):
        super().__init__()
        self.axis, self.low, self.high = axis, low, high

    def forward(self, x, scale, zero_point=None):  # noqa: D102
        x = _as_float(x)
        s = _along(scale, x.dim(), self.axis)
        return quantize(x, s, _along(zero_point, x.dim(), self.axis), self.low, self.high)


class OnnxDequantizeLinear(nn.Module, OnnxToTorchModule):
    """``DequantizeLinear``: ``(x - zero_point) * scale``, exact as onnxruntime computes it."""

    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, x, scale, zero_point=None):  # noqa: D102
        rank = x.dim()
        return (_as_float(x) - _along(zero_point, rank, self.axis)) * _along(scale, rank, self.axis)


class OnnxDynamicQuantizeLinear(nn.Module, OnnxToTorchModule):
    """``DynamicQuantizeLinear``: uint8 with scale and zero point from the tensor's range.

    The range is that of the whole tensor, batch included, as onnxruntime computes it (so a
    batch of inputs is not row-independent: the importer then runs rows one at a time).
    """

    def forward(self, x):  # noqa: D102
        return quantize_dynamically(_as_float(x))


def dynamic_parameters(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``(scale, zero_point)`` of a tensor's range widened to hold 0, as onnxruntime
    computes them (``DynamicQuantizeLinear`` and its dynamically quantized GEMMs); constant
    for the gradient."""
    with torch.no_grad():
        low = torch.clamp(x.min(), max=0.0)
        high = torch.clamp(x.max(), min=0.0)
        scale = (high - low) / 255.0
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        zero_point = torch.clamp(torch.round(0.0 - low / scale), 0, 255)
    return scale, zero_point


def quantize_dynamically(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x`` as uint8 values (in a float tensor) on the grid of its own range, with the
    scale and zero point; the gradient passes straight through to ``x``."""
    scale, zero_point = dynamic_parameters(x)
    # The range holds the whole tensor: the clamp only catches rounding at its ends,
    # so it passes the gradient too.
    rounded = StraightThroughRound.apply(x / scale) + zero_point
    return StraightThroughClamp.apply(rounded, 0, 255), scale, zero_point


def exact_integers(value: torch.Tensor, zero_point, per_channel_axis: int | None = None):
    """``value - zero_point`` in float64 (exact for 8/16-bit integers)."""
    value = value.to(torch.float64)
    if zero_point is None:
        return value
    zero_point = zero_point.to(torch.float64)
    if zero_point.numel() > 1 and per_channel_axis is not None:
        shape = [1] * value.dim()
        shape[per_channel_axis] = -1
        zero_point = zero_point.reshape(shape)
    return value - zero_point


class _IntegerConv(nn.Module):
    """The exact integer accumulation of a convolution, in float64."""

    def __init__(self, strides, pads, dilations, group: int):
        super().__init__()
        self.strides, self.dilations, self.group = strides, dilations, group
        rank = len(pads) // 2
        self.symmetric = pads[:rank] == pads[rank:]
        self.padding = pads[:rank] if self.symmetric else [0] * rank
        self.explicit = []
        if not self.symmetric:
            for d in reversed(range(rank)):
                self.explicit += [pads[d], pads[rank + d]]

    def accumulate(self, x, w, x_zero_point=None, w_zero_point=None) -> torch.Tensor:
        x = exact_integers(x, x_zero_point)
        w = exact_integers(w, w_zero_point, per_channel_axis=0)
        if self.explicit:
            x = F.pad(x, self.explicit)
        conv = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[x.dim()]
        return conv(
            x, w, None, self.strides, self.padding, self.dilations, self.group
        )  # fmt: skip


class OnnxConvInteger(_IntegerConv, OnnxToTorchModule):
    """``ConvInteger``: int32 result (as float32) of the zero-point-shifted convolution."""

    def forward(self, x, w, x_zero_point=None, w_zero_point=None):  # noqa: D102
        return self.accumulate(x, w, x_zero_point, w_zero_point).to(torch.float32)


class OnnxQLinearConv(_IntegerConv, OnnxToTorchModule):
    """``QLinearConv``: exact accumulation plus int32 bias, requantized to ``y``'s type."""

    def __init__(self, strides, pads, dilations, group: int, low: int, high: int):
        super().__init__(strides, pads, dilations, group)
        self.low, self.high = low, high

    def forward(self, x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, b=None):  # noqa: D102
        acc = self.accumulate(x, w, x_zp, w_zp)
        if b is not None:
            acc = acc + b.to(torch.float64).reshape(1, -1, *([1] * (acc.dim() - 2)))
        multiplier = _along(x_scale * w_scale / y_scale, acc.dim(), 1)
        return requantize(acc.to(torch.float32), multiplier, _as_float(y_zp), self.low, self.high)


class OnnxMatMulInteger(nn.Module, OnnxToTorchModule):
    """``MatMulInteger``: int32 result (as float32) of the zero-point-shifted product."""

    def forward(self, a, b, a_zero_point=None, b_zero_point=None):  # noqa: D102
        if a_zero_point is not None and a_zero_point.numel() > 1:
            a_zero_point = a_zero_point.reshape(-1, 1)  # one per row of a
        product = torch.matmul(exact_integers(a, a_zero_point), exact_integers(b, b_zero_point))
        return product.to(torch.float32)


class OnnxQLinearMatMul(nn.Module, OnnxToTorchModule):
    """``QLinearMatMul``: exact integer product requantized to ``y``'s type."""

    def __init__(self, low: int, high: int):
        super().__init__()
        self.low, self.high = low, high

    def forward(self, a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp):  # noqa: D102
        if a_zp.numel() > 1:
            a_zp = a_zp.reshape(-1, 1)
        acc = torch.matmul(exact_integers(a, a_zp), exact_integers(b, b_zp)).to(torch.float32)
        if a_scale.numel() > 1:
            a_scale = a_scale.reshape(-1, 1)  # one per row of a
        multiplier = a_scale * b_scale / y_scale
        return requantize(acc, multiplier, _as_float(y_zp), self.low, self.high)


def integer_range(node: OnnxNode, graph: OnnxGraph, zero_point_index: int) -> tuple[int, int]:
    """The integer range of a quantized output: from its zero point's type, the
    ``output_dtype`` attribute, or uint8 by default.

    Raises:
        NotImplementedError: a type other than (u)int8 / (u)int16.
    """
    element = node.attributes.get("output_dtype", 0) or 2
    names = node.input_values
    if len(names) > zero_point_index and names[zero_point_index]:
        name = names[zero_point_index]
        if name in graph.initializers:
            element = TORCH_TO_ONNX.get(graph.initializers[name].to_torch().dtype, -1)
        elif name in graph.value_info:
            element = graph.value_info[name].type.tensor_type.elem_type
    if element not in INTEGER_RANGES:
        raise NotImplementedError(f"{node.operation_type} to element type {element}")
    return INTEGER_RANGES[element]


def _result(module: nn.Module, node: OnnxNode) -> OperationConverterResult:
    return OperationConverterResult(torch_module=module, onnx_mapping=onnx_mapping_from_node(node))


def _no_blocks(node: OnnxNode) -> None:
    if node.attributes.get("block_size", 0):
        raise NotImplementedError(f"{node.operation_type} with block_size is not supported")


@register("QuantizeLinear", (10, 13, 19, 21))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    _no_blocks(node)
    if not node.attributes.get("saturate", 1):
        raise NotImplementedError("QuantizeLinear with saturate=0 is not supported")
    low, high = integer_range(node, graph, 2)
    return _result(OnnxQuantizeLinear(node.attributes.get("axis", 1), low, high), node)


@register("DequantizeLinear", (10, 13, 19, 21))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    _no_blocks(node)
    return _result(OnnxDequantizeLinear(node.attributes.get("axis", 1)), node)


@register("DynamicQuantizeLinear", (11,))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _result(OnnxDynamicQuantizeLinear(), node)


def _conv_attributes(node: OnnxNode, graph: OnnxGraph) -> tuple[list, list, list, int]:
    auto_pad = node.attributes.get("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", b"NOTSET", "VALID", b"VALID"):
        raise NotImplementedError(f"{node.operation_type} with auto_pad={auto_pad!r}")
    weight = node.input_values[3 if node.operation_type == "QLinearConv" else 1]
    kernel = node.attributes.get("kernel_shape")
    if kernel is None and weight in graph.initializers:
        kernel = list(graph.initializers[weight].to_torch().shape[2:])
    if kernel is None:
        raise NotImplementedError(f"{node.operation_type} without kernel_shape")
    rank = len(kernel)
    return (
        list(node.attributes.get("strides", [1] * rank)),
        list(node.attributes.get("pads", [0] * 2 * rank)),
        list(node.attributes.get("dilations", [1] * rank)),
        int(node.attributes.get("group", 1)),
    )


@register("ConvInteger", (10,))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _result(OnnxConvInteger(*_conv_attributes(node, graph)), node)


@register("QLinearConv", (10,))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    low, high = integer_range(node, graph, 7)
    return _result(OnnxQLinearConv(*_conv_attributes(node, graph), low, high), node)


@register("MatMulInteger", (10,))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _result(OnnxMatMulInteger(), node)


@register("QLinearMatMul", (10, 21))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    low, high = integer_range(node, graph, 7)
    return _result(OnnxQLinearMatMul(low, high), node)
