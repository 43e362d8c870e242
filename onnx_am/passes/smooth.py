"""Decoupled backward for smooth activations (SiLU, HardSwish, GELU, Mish, HardSigmoid).

In the spirit of the decoupled rectifier: the forward is the original op, bit for bit (the
converted module itself computes it), and the backward uses the op's true derivative floored
at ``beta``: ``grad * max(f'(x), beta)``, so where the activation is flat or decreasing (the
negative side of SiLU, below -3 for HardSwish) the gradient does not vanish or turn around.
Rows without a slope get the true derivative. There is no proxy network for these ops:
``proxy`` rows get the same floored backward.

Each rule's ``alpha`` is the smallest value of its derivative, so a floor at alpha changes
nothing. These rules are opt-in (``RectifierRule.default = False``): name them in
``decouple_rectifiers(rules=...)``; see :data:`SMOOTH_RULES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from onnx_am.passes.base import RectifierRule, RuleMatch
from onnx_am.passes.rectifier import DecoupledRectifier

Derivative = Callable[[torch.Tensor], torch.Tensor]

#: The opt-in smooth rules, by registry name (filled by the rule modules).
SMOOTH_RULES: list[str] = []


class FlooredGradient(torch.autograd.Function):
    """Returns ``y`` (computed without a graph); sends ``grad * max(f'(x), floor)`` to ``x``.

    ``floor`` is a float or a per-row tensor broadcasting against ``x``; NaN rows get the
    true derivative ``f'(x)``.
    """

    @staticmethod
    def forward(ctx, y, x, floor, derivative):  # noqa: D102
        ctx.save_for_backward(x)
        ctx.floor = floor
        ctx.derivative = derivative
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (x,) = ctx.saved_tensors
        slope = ctx.derivative(x.detach())
        floor = ctx.floor
        if isinstance(floor, torch.Tensor):
            floored = torch.maximum(slope, torch.nan_to_num(floor, nan=-math.inf))
        else:
            floored = torch.clamp(slope, min=floor)
        grad_x = grad * floored
        if grad_x.shape != x.shape:
            grad_x = grad_x.sum_to_size(x.shape)
        return None, grad_x, None, None


class DecoupledSmooth(DecoupledRectifier):
    """A smooth activation whose backward is floored at the rows' ``beta``.

    Attributes:
        derivative: ``f'`` as a function of the activation's input.
        x_index: which input of the converted module is ``x`` (the SiLU pattern's ``Mul``).
    """

    def __init__(self, node, op_type, alpha, source_module, derivative, x_index: int = 0):
        super().__init__(node, op_type, alpha, source_module)
        self.__dict__["derivative"] = derivative
        self.x_index = x_index

    def true_forward(self, *inputs: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.source_module(*inputs)

    def rectified_input(self, *inputs: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return inputs[self.x_index]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:  # noqa: D102
        slopes = self.backward_slope if self.backward_slope is not None else self.forward_slope
        if slopes is None:
            return self.true_forward(*inputs)
        x = self.rectified_input(*inputs)
        self.plan().check(x)
        with torch.no_grad():
            y = self.true_forward(*inputs)
        floor = slopes.to(dtype=x.dtype, device=x.device).view(-1, *([1] * (x.dim() - 1)))
        return FlooredGradient.apply(y, x, floor, self.derivative)


class SmoothRule(RectifierRule):
    """Base of the smooth rules: one converted module type, one derivative, opt-in.

    Subclasses set ``op_type``, ``module_types``, ``alpha`` (the derivative's minimum) and
    implement :meth:`derivative`.
    """

    default = False
    alpha: float = 0.0

    def derivative(self, node, module) -> Derivative:
        """``f'`` of this node (attributes read from the converted module)."""
        raise NotImplementedError

    def match_node(self, node, graph):  # noqa: D102
        return RuleMatch(alpha=self.alpha)

    def build(self, node, module, match, *, decouple_upper=False):  # noqa: D102
        return DecoupledSmooth(
            node.name,
            node.op_type,
            match.alpha,
            module,
            self.derivative(node, module),
            int(match.details.get("x_index", 0)),
        )


def derivative_minimum(derivative: Derivative, low: float = -20.0, high: float = 20.0) -> float:
    """The smallest value of ``derivative`` on a fine float64 grid (a rule's ``alpha``)."""
    grid = torch.linspace(low, high, 400_001, dtype=torch.float64)
    return float(derivative(grid).min())
