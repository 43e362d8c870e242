"""SiLU / Swish written as ``Mul(x, Sigmoid(x))`` (how torch exports ``nn.SiLU``)."""

from __future__ import annotations

import onnx
import torch
from onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation

from onnx_am.passes.base import RuleMatch, producer
from onnx_am.passes.registry import register_rule
from onnx_am.passes.smooth import SMOOTH_RULES, SmoothRule, derivative_minimum


def silu_derivative(x: torch.Tensor) -> torch.Tensor:
    """``d/dx x * sigmoid(x) = s * (1 + x * (1 - s))``."""
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


def silu_input(node: onnx.NodeProto, graph: onnx.GraphProto) -> int | None:
    """Index of ``x`` in a ``Mul(x, Sigmoid(x))`` node (either order), else ``None``."""
    if node.op_type != "Mul" or len(node.input) != 2 or node.input[0] == node.input[1]:
        return None
    for sig_index in (0, 1):
        sigmoid = producer(graph, node.input[sig_index])
        if (
            sigmoid is not None
            and sigmoid.op_type == "Sigmoid"
            and sigmoid.domain in ("", "ai.onnx")
            and sigmoid.input[0] == node.input[1 - sig_index]
        ):
            return 1 - sig_index
    return None


@register_rule("silu")
class SiluRule(SmoothRule):
    """``Mul(x, Sigmoid(x))``: forward exact, backward ``max(silu'(x), beta)``."""

    op_type = "Mul"
    module_types = (OnnxBinaryMathOperation,)
    alpha = derivative_minimum(silu_derivative)

    def match_node(self, node, graph):  # noqa: D102
        index = silu_input(node, graph)
        if index is None:
            return None
        return RuleMatch(alpha=self.alpha, details={"x_index": index})

    def derivative(self, node, module):  # noqa: D102
        return silu_derivative


SMOOTH_RULES.append("silu")
