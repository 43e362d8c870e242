"""``HardSigmoid``: ``clip(alpha * x + beta, 0, 1)``; flat (zero gradient) when saturated."""

from __future__ import annotations

import torch
from onnx2torch.node_converters.activations import OnnxHardSigmoid

from onnx_am.passes.registry import register_rule
from onnx_am.passes.smooth import SMOOTH_RULES, SmoothRule


def hardsigmoid_derivative(alpha: float, beta: float):
    """``alpha`` where ``0 < alpha * x + beta < 1``, else 0."""

    def derivative(x: torch.Tensor) -> torch.Tensor:
        inside = (alpha * x + beta > 0) & (alpha * x + beta < 1)
        return torch.where(inside, torch.full_like(x, alpha), torch.zeros_like(x))

    return derivative


@register_rule("hardsigmoid")
class HardSigmoidRule(SmoothRule):
    """``HardSigmoid`` (``OnnxHardSigmoid``); the derivative's minimum is 0 (saturation)."""

    op_type = "HardSigmoid"
    module_types = (OnnxHardSigmoid,)
    alpha = 0.0

    def derivative(self, node, module):  # noqa: D102
        return hardsigmoid_derivative(float(module.alpha), float(module.beta))


SMOOTH_RULES.append("hardsigmoid")
