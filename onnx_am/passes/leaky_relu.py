"""``LeakyRelu``: forward slope ``alpha`` (ONNX default 0.01) below zero."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from onnx_am.passes.base import RectifierRule, RuleMatch, attribute
from onnx_am.passes.rectifier import DecoupledRectifier
from onnx_am.passes.registry import register_rule
from onnx_am.passes.spans import SpanRule


class DecoupledLeakyReLU(DecoupledRectifier):
    """``LeakyRelu`` with per-row decoupled or proxy slopes.

    Attributes:
        negative_slope: the converted module's slope, used for the exact forward.
    """

    def __init__(self, node, op_type, alpha, source_module, negative_slope: float):
        super().__init__(node, op_type, alpha, source_module)
        self.negative_slope = negative_slope

    def true_forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return functional.leaky_relu(x, self.negative_slope)

    def make_span_rule(self) -> SpanRule:  # noqa: D102
        # leaky_relu's own backward; the output has the input's sign when the slope is >= 0.
        backward = (torch.ops.aten.leaky_relu_backward, (self.negative_slope, False))
        return SpanRule(saves_output=self.negative_slope >= 0, alpha_grad=backward)


@register_rule("leaky_relu")
class LeakyReluRule(RectifierRule):
    """Every ``LeakyRelu`` node; ``alpha`` is the node's attribute."""

    op_type = "LeakyRelu"
    module_types = (nn.LeakyReLU,)

    def match_node(self, node, graph):  # noqa: D102
        return RuleMatch(alpha=float(attribute(node, "alpha", 0.01)))

    def build(self, node, module, match, *, decouple_upper=False):  # noqa: D102
        return DecoupledLeakyReLU(
            node.name, node.op_type, match.alpha, module, module.negative_slope
        )
