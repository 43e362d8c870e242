"""``Gelu`` (opset 20), exact (erf) or tanh-approximated."""

from __future__ import annotations

import math

import torch

from onnx_am.importer.converters.activations import OnnxGelu
from onnx_am.passes.registry import register_rule
from onnx_am.passes.smooth import SMOOTH_RULES, SmoothRule, derivative_minimum

_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def gelu_derivative(x: torch.Tensor) -> torch.Tensor:
    """``Phi(x) + x * phi(x)``."""
    cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return cdf + x * pdf


def gelu_tanh_derivative(x: torch.Tensor) -> torch.Tensor:
    """Derivative of ``x/2 * (1 + tanh(u))``, ``u = sqrt(2/pi) * (x + 0.044715 x^3)``."""
    u = _SQRT_2_OVER_PI * (x + 0.044715 * x**3)
    t = torch.tanh(u)
    du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du


@register_rule("gelu")
class GeluRule(SmoothRule):
    """``Gelu`` (``OnnxGelu``); the exact form's derivative has its minimum near -0.17."""

    op_type = "Gelu"
    module_types = (OnnxGelu,)
    alpha = derivative_minimum(gelu_derivative)

    def derivative(self, node, module):  # noqa: D102
        return gelu_tanh_derivative if module.approximate == "tanh" else gelu_derivative


SMOOTH_RULES.append("gelu")
