"""Pad-18/19/21: optional ``axes`` input (18) and ``wrap`` mode (19); Pad-2/11/13 replaced.

torch's reflect / replicate / circular padding accepts only inputs with one or two more dims
than the padded ones; onnx2torch's Pad assumes NCHW and refuses the rest (a reflect pad of
the time axis of a ``[batch, samples]`` audio frame, as in silero-vad). :class:`OnnxPadAxes`
reshapes the input to what torch accepts and back, for every opset.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import (
    OnnxMapping,
    OnnxToTorchModule,
    OperationConverterResult,
    get_const_value,
)
from torch import nn

from onnx_am.importer.converters._registry import register, replace
from onnx_am.importer.converters.reduce import constant_axes

#: ONNX pad mode -> torch.nn.functional.pad mode
PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


class OnnxPadAxes(nn.Module, OnnxToTorchModule):
    """Constant pads (ONNX order: all begins, then all ends) applied to ``axes`` (or all)."""

    def __init__(self, pads: list[int], axes: list[int] | None, mode: str, value: float):
        super().__init__()
        self.pads = pads
        self.axes = axes
        self.mode = mode
        self.value = value

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        return pad_onnx(input_tensor, self.pads, self.axes, self.mode, self.value)


class OnnxPadRuntime(nn.Module, OnnxToTorchModule):
    """Pad whose pads (and constant value) are computed by the graph at run time."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(
        self, input_tensor: torch.Tensor, pads: torch.Tensor, value: torch.Tensor | None = None
    ) -> torch.Tensor:
        fill = float(value.reshape(-1)[0]) if value is not None and value.numel() else 0.0
        return pad_onnx(input_tensor, [int(p) for p in pads.tolist()], None, self.mode, fill)


def pad_onnx(
    x: torch.Tensor, pads: list[int], axes: list[int] | None, mode: str, value: float
) -> torch.Tensor:
    """ONNX Pad in torch: ``pads`` lists all begins, then all ends, of ``axes`` (or of every
    axis); ``mode`` is a torch mode (:data:`PAD_MODES`)."""
    rank = x.dim()
    axes = [a % rank for a in axes] if axes is not None else list(range(rank))
    half = len(pads) // 2
    begin, end = [0] * rank, [0] * rank
    for k, axis in enumerate(axes):
        begin[axis], end[axis] = pads[k], pads[half + k]
    padded = [d for d in range(rank) if begin[d] or end[d]]
    if not padded:
        return x
    torch_pads: list[int] = []
    for d in range(rank - 1, min(padded) - 1, -1):
        torch_pads.extend([begin[d], end[d]])
    if mode == "constant":
        return F.pad(x, torch_pads, mode="constant", value=value)
    return _pad_any_rank(x, torch_pads, mode)


def _pad_any_rank(x: torch.Tensor, torch_pads: list[int], mode: str) -> torch.Tensor:
    """``F.pad`` in a non-constant mode for any rank: torch wants ``padded + 1`` or
    ``padded + 2`` dims, so leading dims are added, or merged into one, and restored."""
    padded = len(torch_pads) // 2
    rank, lead = x.dim(), x.shape[: x.dim() - padded]
    if rank < padded + 1:
        shaped = x.reshape((1,) * (padded + 1 - rank) + tuple(x.shape))
    elif rank > padded + 2:
        shaped = x.reshape((-1, *x.shape[rank - padded - 1 :]))
    else:
        return F.pad(x, torch_pads, mode=mode)
    out = F.pad(shaped, torch_pads, mode=mode)
    return out.reshape((*lead, *out.shape[out.dim() - padded :]))


def _constant_scalar(node: OnnxNode, graph: OnnxGraph, index: int) -> float:
    if len(node.input_values) <= index or not node.input_values[index]:
        return 0.0
    try:
        value = get_const_value(node.input_values[index], graph)
    except KeyError as exc:
        raise NotImplementedError(
            f"Pad with non-constant value {node.input_values[index]!r}"
        ) from exc
    return float(torch.as_tensor(value).reshape(-1)[0]) if torch.as_tensor(value).numel() else 0.0


@register("Pad", (18, 19, 21))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    mode = node.attributes.get("mode", "constant")
    if mode not in PAD_MODES:
        raise NotImplementedError(f"Pad mode {mode!r} is not supported")
    pads = constant_axes(node, graph, 1) or []
    module = OnnxPadAxes(
        pads, constant_axes(node, graph, 3), PAD_MODES[mode], _constant_scalar(node, graph, 2)
    )
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values),
    )


@replace("Pad", (11, 13))
def _(node: OnnxNode, graph: OnnxGraph, fallback=None) -> OperationConverterResult:
    mode = node.attributes.get("mode", "constant")
    if mode not in PAD_MODES or mode == "wrap":
        raise NotImplementedError(f"Pad mode {mode!r} is not supported")
    try:
        pads = constant_axes(node, graph, 1) or []
        value = _constant_scalar(node, graph, 2)
    except NotImplementedError:  # pads computed by the graph
        return OperationConverterResult(
            torch_module=OnnxPadRuntime(PAD_MODES[mode]),
            onnx_mapping=OnnxMapping(
                inputs=tuple(v for v in node.input_values[:3] if v), outputs=node.output_values
            ),
        )
    return OperationConverterResult(
        torch_module=OnnxPadAxes(pads, None, PAD_MODES[mode], value),
        onnx_mapping=OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values),
    )


@replace("Pad", (2,))
def _(node: OnnxNode, graph: OnnxGraph, fallback=None) -> OperationConverterResult:
    mode = node.attributes.get("mode", "constant")
    if mode not in PAD_MODES or mode == "wrap":
        raise NotImplementedError(f"Pad mode {mode!r} is not supported")
    module = OnnxPadAxes(
        list(node.attributes.get("pads", [])),
        None,
        PAD_MODES[mode],
        float(node.attributes.get("value", 0.0)),
    )
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values),
    )
