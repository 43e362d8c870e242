"""``Clip(min=0)``, ``Clip(0, 6)`` (ReLU6) and ``Clip(0, m)``: a rectifier with an optional top.

The negative side is decoupled like a ReLU's. The saturated top (``x >= m``) keeps its true
zero gradient unless the pass runs with ``decouple_upper=True``; then it uses ``beta`` too.
"""

from __future__ import annotations

import math

import torch
from onnx2torch.node_converters.clip import OnnxClip
from torch import nn
from torch.nn import functional

from onnx_am.passes.base import RectifierRule, RuleMatch, attribute, constant_value
from onnx_am.passes.rectifier import DecoupledRectifier
from onnx_am.passes.registry import register_rule
from onnx_am.passes.spans import SpanRule

#: Clip-6 attribute defaults (float32 lowest and highest); the top is then absent.
_FLOAT_MAX = 3.4028234663852886e38


class DecoupledClip(DecoupledRectifier):
    """A clip at 0 (and maybe ``upper``) with per-row decoupled or proxy slopes.

    Attributes:
        torch_op: how the converted module computed it: ``"relu"``, ``"hardtanh"``, ``"clamp"``.
        min_val, max_val: the converted module's bounds, for the exact forward.
    """

    def __init__(
        self, node, op_type, source_module, upper, decouple_upper, torch_op, min_val, max_val
    ):
        super().__init__(
            node, op_type, 0.0, source_module, upper=upper, decouple_upper=decouple_upper
        )
        self.torch_op = torch_op
        self.min_val = min_val
        self.max_val = max_val

    def true_forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.torch_op == "relu":
            return torch.relu(x)
        if self.torch_op == "hardtanh":
            return functional.hardtanh(x, self.min_val, self.max_val)
        return torch.clamp(x, self.min_val, self.max_val)

    def make_span_rule(self) -> SpanRule:  # noqa: D102
        # The lower bound is 0, so y > 0 and y >= upper exactly where x's are. clamp's own
        # backward passes the gradient at x == 0 too, which y cannot tell: it saves x, and
        # runs of standard rows take the general path.
        aten = torch.ops.aten
        alpha_grad = {
            "relu": (aten.threshold_backward, (0,)),
            "hardtanh": (aten.hardtanh_backward, (self.min_val, self.max_val)),
        }.get(self.torch_op)
        return SpanRule(
            saves_output=alpha_grad is not None,
            upper=self.upper,
            decouple_upper=self.decouple_upper,
            alpha_grad=alpha_grad,
        )


def clip_bounds(node, graph) -> tuple[float | None, float | None] | None:
    """``(min, max)`` of a Clip node (``None`` = no bound), or ``None`` if one is not constant."""
    if len(node.input) == 1 and node.attribute:  # Clip-6 keeps its bounds in attributes
        low, high = attribute(node, "min", -_FLOAT_MAX), attribute(node, "max", _FLOAT_MAX)
    else:
        bounds = []
        for index in (1, 2):
            name = node.input[index] if len(node.input) > index else ""
            value = constant_value(graph, name)
            if name and value is None:
                return None
            bounds.append(None if value is None else float(value.reshape(-1)[0]))
        low, high = bounds
    low = None if low is None or low <= -_FLOAT_MAX else float(low)
    high = None if high is None or high >= _FLOAT_MAX or math.isinf(high) else float(high)
    return low, high


def _torch_op(module) -> str | None:
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.Hardtanh):  # nn.ReLU6 included
        return "hardtanh"
    if isinstance(module, OnnxClip):
        return "clamp"
    return None


@register_rule("clip")
class ClipRule(RectifierRule):
    """``Clip`` with constant ``min == 0`` and no max or a constant max ``> 0``; ``alpha = 0``."""

    op_type = "Clip"
    module_types = (nn.ReLU, nn.Hardtanh, OnnxClip)  # what _torch_op knows

    def match_node(self, node, graph):  # noqa: D102
        bounds = clip_bounds(node, graph)
        if bounds is None:
            return None
        low, high = bounds
        if low != 0.0 or (high is not None and not high > 0.0):
            return None
        return RuleMatch(alpha=0.0, details={"upper": high})

    def build(self, node, module, match, *, decouple_upper=False):  # noqa: D102
        op = _torch_op(module)
        low = getattr(module, "min_val", None)
        high = getattr(module, "max_val", None)
        upper = match.details["upper"]
        return DecoupledClip(node.name, node.op_type, module, upper, decouple_upper, op, low, high)
