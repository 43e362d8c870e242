"""``PRelu``: a learned slope per channel (any shape that broadcasts to the input)."""

from __future__ import annotations

import numpy as np
import torch
from onnx2torch.node_converters.activations import OnnxPReLU
from torch.nn import functional

from onnx_am.passes.base import RectifierRule, RuleMatch, constant_value
from onnx_am.passes.rectifier import DecoupledRectifier
from onnx_am.passes.registry import register_rule


class DecoupledPReLU(DecoupledRectifier):
    """``PRelu`` with per-row decoupled or proxy slopes; called as ``(x, slope)``."""

    def true_forward(self, x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:  # noqa: D102
        # The same computation as onnx2torch's OnnxPReLU, so values match bit for bit.
        if slope.nelement() == 1 or (
            x.dim() > 1 and slope.shape[0] == x.shape[1] and all(s == 1 for s in slope.shape[1:])
        ):
            return functional.prelu(x, weight=slope.view(-1))
        output = x.clone() * slope
        mask = x >= 0
        output[mask] = x[mask]
        return output


@register_rule("prelu")
class PReluRule(RectifierRule):
    """``PRelu`` with a constant slope; ``alpha`` is that slope (a float if it has one value)."""

    op_type = "PRelu"
    module_types = (OnnxPReLU,)

    def match_node(self, node, graph):  # noqa: D102
        if len(node.input) < 2:
            return None
        slope = constant_value(graph, node.input[1])
        if slope is None or not np.issubdtype(slope.dtype, np.floating):
            return None
        alpha = float(slope.reshape(-1)[0]) if slope.size == 1 else slope.astype(np.float64)
        return RuleMatch(alpha=alpha)

    def build(self, node, module, match, *, decouple_upper=False):  # noqa: D102
        return DecoupledPReLU(node.name, node.op_type, match.alpha, module)
