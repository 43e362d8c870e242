"""A softmax written out as ops: ``Exp(x [- max]) / ReduceSum(Exp(x [- max]))``.

Exporters from JAX (jax2tf + tf2onnx, as Google's magika ships) and hand-written heads do not
always emit a ``Softmax`` node. :func:`written_softmax` recognises the division at the end of
one and returns the tensor the softmax normalizes (its logits), so that the default targets
are the logits and not probabilities that saturate:

- ``Div(e, s)`` where ``e = Exp(z)`` and ``s`` is ``ReduceSum(e)`` over one axis, possibly
  through :data:`BROADCASTS` (reshapes and expands that only bring the sum back to ``e``'s
  shape);
- ``z = Sub(x, m)`` where ``m`` is ``ReduceMax(x)`` (through the same ops, and a ``Max``
  with a constant, as jax clamps the max away from ``-inf``) gives ``x``; any other ``z``
  is itself the logits (subtracting a constant per row does not change the softmax either).
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx
from onnx import numpy_helper

#: Ops between a reduction and the division / subtraction that only move or broadcast it.
BROADCASTS = frozenset({"Identity", "Reshape", "Expand", "Unsqueeze", "Squeeze", "Cast"})


def written_softmax(
    model: onnx.ModelProto, producers: Mapping[str, onnx.NodeProto], node: onnx.NodeProto
) -> tuple[str, int] | None:
    """``(logits tensor, axis)`` when ``node`` is the division of a written-out softmax (see
    the module docstring), else ``None``. ``axis`` is the summed axis as written (it may be
    negative)."""
    if node.op_type != "Div" or len(node.input) != 2:
        return None
    exp = producers.get(node.input[0])
    if exp is None or exp.op_type != "Exp":
        return None
    total = _through(producers, node.input[1], BROADCASTS)
    if total is None or total.op_type != "ReduceSum" or total.input[0] != exp.output[0]:
        return None
    axes = _axes(model, producers, total)
    if axes is None or len(axes) != 1:
        return None
    return _before_max(producers, exp.input[0]), axes[0]


def _before_max(producers: Mapping[str, onnx.NodeProto], tensor: str) -> str:
    """``x`` when ``tensor`` is ``x - ReduceMax(x)`` (through broadcasts and a ``Max`` with
    a constant), else ``tensor``."""
    sub = producers.get(tensor)
    if sub is None or sub.op_type != "Sub":
        return tensor
    node = producers.get(sub.input[1])
    while node is not None and (node.op_type in BROADCASTS or node.op_type == "Max"):
        if node.op_type == "Max":
            varying = [name for name in node.input if name in producers]
            if len(varying) != 1:
                return tensor
            node = producers.get(varying[0])
        else:
            node = producers.get(node.input[0])
    if node is not None and node.op_type == "ReduceMax" and node.input[0] == sub.input[0]:
        return sub.input[0]
    return tensor


def _through(producers, tensor: str, ops: frozenset[str]) -> onnx.NodeProto | None:
    node, seen = producers.get(tensor), 0
    while node is not None and node.op_type in ops and node.input and seen < 16:
        node, seen = producers.get(node.input[0]), seen + 1
    return node


def _axes(model: onnx.ModelProto, producers, node: onnx.NodeProto) -> list[int] | None:
    """A reduction's axes: the attribute (opset < 13 for ReduceSum), else its second input
    as an initializer or a ``Constant``; ``None`` when not known (or every axis)."""
    for attribute in node.attribute:
        if attribute.name == "axes":
            return list(attribute.ints)
    if len(node.input) < 2 or not node.input[1]:
        return None
    name = node.input[1]
    for initializer in model.graph.initializer:
        if initializer.name == name:
            return [int(a) for a in numpy_helper.to_array(initializer).reshape(-1)]
    constant = producers.get(name)
    if constant is not None and constant.op_type == "Constant":
        for attribute in constant.attribute:
            if attribute.name == "value":
                return [int(a) for a in numpy_helper.to_array(attribute.t).reshape(-1)]
    return None
