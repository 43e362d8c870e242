"""``Relu``: forward slope 0 below zero."""

from __future__ import annotations

import onnx
import torch
from torch import nn

from onnx_am.passes.base import RectifierRule, RuleMatch
from onnx_am.passes.rectifier import DecoupledRectifier
from onnx_am.passes.registry import register_rule
from onnx_am.passes.spans import SpanRule


class DecoupledReLU(DecoupledRectifier):
    """``Relu`` with per-row decoupled or proxy slopes."""

    def true_forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.relu(x)

    def make_span_rule(self) -> SpanRule:  # noqa: D102
        # nn.ReLU's own backward: threshold_backward on the output.
        return SpanRule(saves_output=True, alpha_grad=(torch.ops.aten.threshold_backward, (0,)))


@register_rule("relu")
class ReluRule(RectifierRule):
    """Every ``Relu`` node (converted to ``nn.ReLU``) is a rectifier with ``alpha = 0``."""

    op_type = "Relu"
    module_types = (nn.ReLU,)

    def match_node(self, node, graph):  # noqa: D102
        return RuleMatch(alpha=0.0)

    def build(self, node: onnx.NodeProto, module, match, *, decouple_upper=False):  # noqa: D102
        return DecoupledReLU(node.name, node.op_type, match.alpha, module)
