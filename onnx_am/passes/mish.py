"""``Mish``: ``x * tanh(softplus(x))``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from onnx_am.importer.converters.activations import OnnxMish
from onnx_am.passes.registry import register_rule
from onnx_am.passes.smooth import SMOOTH_RULES, SmoothRule, derivative_minimum


def mish_derivative(x: torch.Tensor) -> torch.Tensor:
    """``tanh(sp) + x * (1 - tanh(sp)^2) * sigmoid(x)``, ``sp = softplus(x)``."""
    t = torch.tanh(F.softplus(x))
    return t + x * (1 - t * t) * torch.sigmoid(x)


@register_rule("mish")
class MishRule(SmoothRule):
    """``Mish`` (``OnnxMish``); its derivative's minimum is about -0.22."""

    op_type = "Mish"
    module_types = (OnnxMish,)
    alpha = derivative_minimum(mish_derivative)

    def derivative(self, node, module):  # noqa: D102
        return mish_derivative


SMOOTH_RULES.append("mish")
