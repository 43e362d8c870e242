"""The decoupled rectifier module: the original forward, with per-row slopes for the gradient.

Each replacement computes the original op exactly (bit-identical to the unrewritten graph).
Two optional per-row slope tensors, set by :class:`~onnx_am.passes.control.SlopeControl`,
change what it does; a NaN entry means "this row uses alpha", i.e. the original op:

- ``backward_slope``: rows with a slope ``beta`` keep the original forward value, but their
  gradient is ``1`` where ``x > 0`` and ``beta`` where ``x <= 0`` (``decoupled``); a clip's
  saturated top (``x >= upper``) passes ``0``, or ``beta`` with ``decouple_upper``;
- ``forward_slope``: rows with a slope ``beta`` compute ``where(x > 0, x, beta * x)`` (with
  the clip's top) and take its ordinary gradient: the proxy network of ProxyGrad.
"""

from __future__ import annotations

import torch
from torch import nn

from onnx_am.errors import PassError
from onnx_am.passes.base import Alpha


class RedirectGradient(torch.autograd.Function):
    """Identity on ``y``; rows with a finite slope send their gradient to ``x`` by the beta rule."""

    @staticmethod
    def forward(ctx, y, x, slope, upper, decouple_upper):  # noqa: D102
        ctx.save_for_backward(x, slope)
        ctx.upper = upper
        ctx.decouple_upper = decouple_upper
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, slope = ctx.saved_tensors
        # Per-row factors are small (N, 1, ...); only two full-size products are made.
        keep = (~torch.isnan(slope)).to(grad.dtype)  # 1 for rows with a slope, 0 for alpha rows
        beta = torch.nan_to_num(slope, nan=0.0)
        local = torch.where(x > 0, keep, beta)
        if ctx.upper is not None:
            top = beta if ctx.decouple_upper else torch.zeros_like(beta)
            local = torch.where(x >= ctx.upper, top, local)
        grad_x = grad * local
        grad_y = grad * (1 - keep)
        if grad_x.shape != x.shape:
            grad_x = grad_x.sum_to_size(x.shape)
        return grad_y, grad_x, None, None, None


def proxy_rectifier(
    x: torch.Tensor, beta: torch.Tensor, upper: float | None = None, decouple_upper: bool = False
) -> torch.Tensor:
    """The proxy network's rectifier: slope ``beta`` below 0, a cap (or slope) at ``upper``."""
    out = torch.where(x > 0, x, beta * x)
    if upper is None:
        return out
    top_slope = beta if decouple_upper else torch.zeros_like(beta)
    return torch.where(x < upper, out, upper + top_slope * (x - upper))


class DecoupledRectifier(nn.Module):
    """Base of the replacement modules; subclasses implement :meth:`true_forward`.

    Attributes:
        node: the ONNX node name.
        op_type: the ONNX op type.
        alpha: the forward slope (float, or per-channel array in the ONNX slope shape).
        upper: the saturation value of a clip (``None`` when there is none).
        decouple_upper: whether the saturated top uses ``beta`` too.
        forward_slope: ``None`` or a float tensor ``(N,)`` / ``(N, *alpha.shape)``, NaN = alpha.
        backward_slope: likewise, for the gradient.
        source_module: the converted module this one replaces (not a registered child).
    """

    def __init__(
        self,
        node: str,
        op_type: str,
        alpha: Alpha,
        source_module: nn.Module,
        upper: float | None = None,
        decouple_upper: bool = False,
    ):
        super().__init__()
        self.node = node
        self.op_type = op_type
        self.alpha = alpha
        self.upper = upper
        self.decouple_upper = decouple_upper
        self.forward_slope: torch.Tensor | None = None
        self.backward_slope: torch.Tensor | None = None
        # Kept out of _modules so it is neither a child nor in the state dict.
        self.__dict__["source_module"] = source_module

    def true_forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The original op, computed exactly as the converted module computes it."""
        raise NotImplementedError

    def rectified_input(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The tensor ``x`` whose sign decides the slope (the first input by default)."""
        return inputs[0]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = self.true_forward(*inputs)
        if self.forward_slope is None and self.backward_slope is None:
            return y
        x = self.rectified_input(*inputs)
        if self.backward_slope is not None:
            slope = self._rows(self.backward_slope, x)
            y = RedirectGradient.apply(y, x, slope, self.upper, self.decouple_upper)
        if self.forward_slope is not None:
            slope = self._rows(self.forward_slope, x)
            proxy = proxy_rectifier(
                x, torch.nan_to_num(slope, nan=0.0), self.upper, self.decouple_upper
            )
            y = torch.where(torch.isnan(slope), y, proxy)
        return y

    def _rows(self, slope: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Reshape ``(N,)`` or ``(N, *alpha.shape)`` slopes to broadcast against ``x``."""
        if x.dim() == 0 or slope.shape[0] != x.shape[0]:
            batch = x.shape[0] if x.dim() else "a scalar"
            raise PassError(
                f"slopes were set for {slope.shape[0]} row(s) but node {self.node!r} got a batch "
                f"of {batch}; set_rows needs one method per row of the batch (rowwise batching "
                "runs rows one at a time and cannot mix methods)"
            )
        slope = slope.to(dtype=x.dtype, device=x.device)
        if slope.dim() == 1:
            return slope.view(-1, *([1] * (x.dim() - 1)))
        return slope.view(-1, *_channel_shape(tuple(slope.shape[1:]), x.dim(), self.node))


def _channel_shape(shape: tuple[int, ...], rank: int, node: str) -> tuple[int, ...]:
    """The non-batch part of a per-channel slope shape, right-aligned to ``rank`` (ONNX rules)."""
    if len(shape) <= rank - 1:
        return (1,) * (rank - 1 - len(shape)) + shape
    if len(shape) == rank and shape[0] == 1:
        return shape[1:]
    raise PassError(
        f"slope of shape {shape} of node {node!r} does not broadcast to an input of rank {rank}"
    )
