"""What one forward pass of a model costs, estimated from its graph before anything runs.

The time limit of the import probes and the parity check follows the model's work
(:mod:`onnx_am.importer.limits`), and the memory check compares the weights and activations
with the memory there is. Both read a :class:`ForwardCost`: floating-point operations of one
sample, bytes of the weights, bytes of every inferred tensor at batch 1. Shapes come from ONNX
shape inference; a tensor whose shape is unknown counts as empty (a hostile graph cannot make
its estimate large by hiding shapes: what it hides is bounded by the floor of the time limit
and by the address-space checks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

#: Bytes per element of a tensor in the torch graph (float32; quantized weights are dequantized).
ELEMENT_BYTES = 4
#: Ops whose multiply-adds are ``output elements x the last dim of input 0``.
MATMUL_OPS = ("MatMul", "MatMulInteger", "Gemm", "QLinearMatMul", "FusedMatMul")
#: Ops whose multiply-adds are ``output elements x weight elements / output channels``.
CONV_OPS = ("Conv", "ConvInteger", "QLinearConv")
#: Recurrent ops: ``sequence x batch x (W + R elements)`` multiply-adds.
RNN_OPS = ("LSTM", "GRU", "RNN")
#: Fixed work of one node, as operations (dispatching it in the torch graph and in
#: onnxruntime, its share of the session set-up): a graph of many small nodes is not free
#: (a 171-node MobileNetV2 at 32x32 does 1.2e7 operations, and its parity check took 3.4 s
#: on the 2-core machine under a load of 9).
NODE_FLOPS = 2.5e6


@dataclass(frozen=True)
class ForwardCost:
    """Estimated cost of one forward pass at batch 1.

    Attributes:
        flops: floating-point operations (a multiply-add is 2), plus one per element read or
            written by every op and per weight, and :data:`NODE_FLOPS` per node.
        weight_bytes: the initializers, as float32 (held once by the torch graph).
        activation_bytes: every inferred tensor that is not an initializer, at batch 1 (what
            a backward pass of one row keeps at most).
    """

    flops: float = 0.0
    weight_bytes: float = 0.0
    activation_bytes: float = 0.0


def estimate_cost(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> ForwardCost:
    """The :class:`ForwardCost` of ``model`` (its main graph) given inferred batch-1 shapes."""
    weights = {t.name: [int(d) for d in t.dims] for t in model.graph.initializer}
    known = {**shapes, **weights}
    flops = NODE_FLOPS * len(model.graph.node)
    for node in model.graph.node:
        flops += _node_flops(node, known)
    weight_elements = sum(_elements(shape) for shape in weights.values())
    activations = sum(_elements(shape) for name, shape in shapes.items() if name not in weights)
    return ForwardCost(
        flops=flops + weight_elements,
        weight_bytes=ELEMENT_BYTES * weight_elements,
        activation_bytes=ELEMENT_BYTES * activations,
    )


def _elements(shape: list[int] | None) -> float:
    return float(math.prod(max(d, 0) for d in shape)) if shape is not None else 0.0


def _node_flops(node: onnx.NodeProto, known: dict[str, list[int]]) -> float:
    inputs = [known.get(name) for name in node.input]
    outputs = [known.get(name) for name in node.output]
    traffic = sum(_elements(s) for s in inputs) + sum(_elements(s) for s in outputs)
    out = _elements(outputs[0]) if outputs else 0.0
    first = inputs[0] if inputs else None
    if node.op_type in MATMUL_OPS and first:
        return traffic + 2 * out * max(first[-1], 1)
    if node.op_type in CONV_OPS:
        weight = inputs[3] if node.op_type == "QLinearConv" and len(inputs) > 3 else None
        weight = weight if weight is not None else (inputs[1] if len(inputs) > 1 else None)
        if weight:
            return traffic + 2 * out * _elements(weight) / max(weight[0], 1)
    if node.op_type == "ConvTranspose" and first and len(inputs) > 1 and inputs[1]:
        return traffic + 2 * _elements(first) * _elements(inputs[1]) / max(inputs[1][0], 1)
    if node.op_type in RNN_OPS and first and len(first) == 3 and len(inputs) > 2:
        steps = first[0] * first[1]
        return traffic + 2 * steps * (_elements(inputs[1]) + _elements(inputs[2]))
    return traffic


__all__ = ["ForwardCost", "estimate_cost"]
