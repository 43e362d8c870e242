"""onnxruntime's ``com.microsoft`` ``DynamicQuantizeLSTM``: an LSTM whose two GEMMs run in 8 bits.

What onnxruntime's CPU kernel computes (``contrib_ops/cpu/quantization/dynamic_quantize_lstm.cc``
on top of ``uni_directional_lstm.cc`` and the quantized ``ComputeGemm`` of ``rnn_helpers.cc``),
and what this module emulates, per direction:

- W is ``[dirs, input, 4*hidden]`` and R ``[dirs, hidden, 4*hidden]`` (transposed with respect
  to ``LSTM``), int8 or uint8, gates in ``LSTM``'s ``i, o, f, c`` order; scales and zero points
  are ``[dirs]`` (per tensor) or ``[dirs, 4*hidden]`` (per output column; only the first zero
  point of a direction is used, the kernel requires them equal).
- The input GEMM runs once for all steps: X (every step and batch row up to the longest
  sequence) is quantized to uint8 with the scale and zero point of its own range, as
  ``DynamicQuantizeLinear`` does; the integer product is exact, and the result is
  ``float(int32) * (x_scale * w_scale)``.
- At every step the previous hidden state (all batch rows) is quantized the same way, on
  its own range, and multiplied by R; then the ONNX LSTM equations in float as
  :class:`OnnxRecurrent` computes them (activations, ``clip``, ``input_forget``, peepholes),
  with ``Wb + Rb`` added to the sum of both products as onnxruntime orders it, and sigmoid and
  tanh as onnxruntime computes them (:mod:`.onnxruntime_math`).

Rounding stays in the forward; backward, it is passed straight through and the dynamic scales
and zero points are held constant, so the gradient is that of an LSTM with the dequantized
weights (the straight-through estimator of :mod:`.quantized`).

Where the emulation and onnxruntime can differ: onnxruntime splits the batch across threads
when it has more than 4 rows (or at least 2 and ``hidden_size <= 256``) and then quantizes
the hidden state per chunk of rows; and with ``sequence_lens`` the rows that have ended count
as zeros in onnxruntime's range, as their last state here. At batch 1 (how onnx-am runs a
model whose batch rows are not independent, as here) neither applies, and the outputs are
bit-identical to onnxruntime's on the machine this was written on (x86-64 with FMA); where
MLAS picks other kernels (no FMA, ARM) one float32 ulp can differ, which moves a hidden value
that sits on a rounding tie by one quantization step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

from onnx_am.importer.converters._registry import register
from onnx_am.importer.converters.onnxruntime_math import onnxruntime_sigmoid, onnxruntime_tanh
from onnx_am.importer.converters.quantized import exact_integers, quantize_dynamically
from onnx_am.importer.converters.recurrent import ACTIVATIONS, OnnxRecurrent, recurrent_options

#: The gate activations, with sigmoid and tanh as onnxruntime computes them.
ONNXRUNTIME_ACTIVATIONS = {
    **ACTIVATIONS,
    "Sigmoid": (lambda x, a, b: onnxruntime_sigmoid(x), None, None),
    "Tanh": (lambda x, a, b: onnxruntime_tanh(x), None, None),
}


@dataclass(frozen=True)
class QuantizedWeight:
    """One direction's integer weight ``[in, out]`` less its zero point (exact, float64), its
    scale (scalar or ``[out]``) and the float bias added after the product (or ``None``)."""

    shifted: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor | None = None

    @classmethod
    def of_direction(cls, values, scale, zero_point, d: int, bias=None) -> QuantizedWeight:
        """Direction ``d`` of the node's ``[dirs, in, out]`` weight and its parameters (one
        zero point per direction: the first, as onnxruntime reads it)."""
        zero = None if zero_point is None else zero_point[d].reshape(-1)[0]
        return cls(exact_integers(values[d], zero), scale[d].to(torch.float32), bias)


def dynamic_quantized_matmul(a: torch.Tensor, weight: QuantizedWeight) -> torch.Tensor:
    """``a @ W`` as onnxruntime's dynamically quantized GEMM: ``a`` to uint8 on its own range,
    an exact integer product, ``float(int32) * (a_scale * w_scale)``.

    Args:
        a: float ``[..., in]``; one range for the whole tensor.
        weight: the integer weight.

    Returns:
        float32 ``[..., out]``; its gradient to ``a`` is that of ``a @ dequantized W``.
    """
    quantized, scale, zero_point = quantize_dynamically(a)
    product = torch.matmul(exact_integers(quantized, zero_point), weight.shifted)
    return product.to(torch.float32) * (scale * weight.scale)


class OnnxDynamicQuantizeLSTM(OnnxRecurrent):
    """A ``com.microsoft`` ``DynamicQuantizeLSTM`` node; inputs in the node's order (``X, W,
    R, B, sequence_lens, initial_h, initial_c, P, W_scale, W_zero_point, R_scale,
    R_zero_point``), outputs ``Y, Y_h, Y_c`` as listed."""

    def forward(  # noqa: D102
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        r: torch.Tensor,
        b: torch.Tensor | None = None,
        sequence_lens: torch.Tensor | None = None,
        initial_h: torch.Tensor | None = None,
        initial_c: torch.Tensor | None = None,
        p: torch.Tensor | None = None,
        w_scale: torch.Tensor | None = None,
        w_zero_point: torch.Tensor | None = None,
        r_scale: torch.Tensor | None = None,
        r_zero_point: torch.Tensor | None = None,
    ):
        directions = range(len(self.directions))
        gates = 4 * self.hidden_size
        # onnxruntime adds Wb + Rb (summed first) after both products: the bias rides with R.
        biases = [None if b is None else b[d, :gates] + b[d, gates:] for d in directions]
        ws = [QuantizedWeight.of_direction(w, w_scale, w_zero_point, d) for d in directions]
        rs = [
            QuantizedWeight.of_direction(r, r_scale, r_zero_point, d, biases[d]) for d in directions
        ]
        return self._run(x, ws, rs, None, sequence_lens, initial_h, initial_c, p)

    def _project_inputs(self, x, w, lengths):
        if lengths is None:
            return dynamic_quantized_matmul(x, w)
        # onnxruntime quantizes the steps up to the longest sequence only.
        steps = int(lengths.max())
        if steps == 0:
            return x.new_zeros(*x.shape[:-1], w.shifted.shape[1])
        projected = dynamic_quantized_matmul(x[:steps], w)
        return torch.cat([projected, projected.new_zeros(x.shape[0] - steps, *projected.shape[1:])])

    def _preactivation(self, xw_t, h, r, rb):
        pre = xw_t + dynamic_quantized_matmul(h, r)
        return pre if r.bias is None else pre + r.bias


@register("DynamicQuantizeLSTM", (1,), domain="com.microsoft")
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    if len(node.input_values) < 12 or not all(node.input_values[8:12:2]):
        raise NotImplementedError("DynamicQuantizeLSTM without W_scale / R_scale")
    options = recurrent_options(node, "LSTM", ONNXRUNTIME_ACTIVATIONS)
    module = OnnxDynamicQuantizeLSTM("LSTM", **options)
    return OperationConverterResult(torch_module=module, onnx_mapping=onnx_mapping_from_node(node))
