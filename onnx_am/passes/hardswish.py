"""``HardSwish``: ``x * clip(x / 6 + 1/2, 0, 1)``."""

from __future__ import annotations

import torch
from torch import nn

from onnx_am.passes.registry import register_rule
from onnx_am.passes.smooth import SMOOTH_RULES, SmoothRule


def hardswish_derivative(x: torch.Tensor) -> torch.Tensor:
    """0 below -3, ``x / 3 + 1/2`` up to 3, 1 above (torch's convention at the kinks)."""
    middle = x / 3 + 0.5
    return torch.where(x < -3, torch.zeros_like(x), torch.where(x <= 3, middle, torch.ones_like(x)))


@register_rule("hardswish")
class HardSwishRule(SmoothRule):
    """``HardSwish`` (converted to ``nn.Hardswish``); its derivative's minimum is -1/2."""

    op_type = "HardSwish"
    module_types = (nn.Hardswish,)
    alpha = -0.5

    def derivative(self, node, module):  # noqa: D102
        return hardswish_derivative


SMOOTH_RULES.append("hardswish")
