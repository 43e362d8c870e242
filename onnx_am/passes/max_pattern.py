"""``Max(x, Mul(x, a))`` with a constant scalar ``0 < a < 1``: a Leaky ReLU in disguise.

Some exporters (e.g. tf2onnx for ``tf.nn.leaky_relu``) write Leaky ReLU this way. Only
``Max`` nodes that really are one match: two inputs, one of them the output of a ``Mul`` of
the other input and a constant scalar in ``(0, 1)``; either argument order of ``Max`` and
of ``Mul``.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx2torch.node_converters.min_max import OnnxMinMax

from onnx_am.passes.base import RectifierRule, RuleMatch, constant_value, producer
from onnx_am.passes.rectifier import DecoupledRectifier
from onnx_am.passes.registry import register_rule


class DecoupledMaxLeaky(DecoupledRectifier):
    """``Max(x, x * a)`` with per-row decoupled or proxy slopes; called with both inputs.

    Attributes:
        x_index: which input of the ``Max`` is ``x``.
    """

    def __init__(self, node, op_type, alpha, source_module, x_index: int):
        super().__init__(node, op_type, alpha, source_module)
        self.x_index = x_index

    def true_forward(self, *inputs: torch.Tensor) -> torch.Tensor:  # noqa: D102
        # The same computation as onnx2torch's OnnxMinMax, so values match bit for bit.
        shape = torch.broadcast_shapes(*(tensor.shape for tensor in inputs))
        return torch.amax(torch.stack([tensor.broadcast_to(shape) for tensor in inputs]), dim=0)

    def rectified_input(self, *inputs: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return inputs[self.x_index]


def leaky_slope(node: onnx.NodeProto, graph: onnx.GraphProto) -> tuple[int, float] | None:
    """``(index of x in the Max, a)`` when ``node`` is ``Max(x, Mul(x, a))``, else ``None``."""
    if node.op_type != "Max" or len(node.input) != 2 or node.input[0] == node.input[1]:
        return None
    for scaled_index in (0, 1):
        x_name = node.input[1 - scaled_index]
        mul = producer(graph, node.input[scaled_index])
        if (
            mul is None
            or mul.op_type != "Mul"
            or mul.domain not in ("", "ai.onnx")
            or len(mul.input) != 2
        ):
            continue
        if x_name not in mul.input:
            continue
        factor = constant_value(graph, mul.input[1 - list(mul.input).index(x_name)])
        if factor is None or factor.size != 1 or not np.issubdtype(factor.dtype, np.floating):
            continue
        slope = float(factor.reshape(-1)[0])
        if 0.0 < slope < 1.0:
            return 1 - scaled_index, slope
    return None


@register_rule("max_leaky")
class MaxLeakyRule(RectifierRule):
    """``Max(x, Mul(x, a))`` with constant scalar ``0 < a < 1``; ``alpha = a``."""

    op_type = "Max"
    module_types = (OnnxMinMax,)

    def match_node(self, node, graph):  # noqa: D102
        found = leaky_slope(node, graph)
        if found is None:
            return None
        x_index, slope = found
        return RuleMatch(alpha=slope, details={"x_index": x_index})

    def build(self, node, module, match, *, decouple_upper=False):  # noqa: D102
        return DecoupledMaxLeaky(
            node.name, node.op_type, match.alpha, module, match.details["x_index"]
        )
