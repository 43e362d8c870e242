"""Which onnxruntime graph optimizations the reference runs the model with.

onnxruntime's extended optimizations fuse a ``DequantizeLinear`` of an integer weight into
the ``MatMul`` it feeds (``MatMulNBits``), whose CPU kernel computes with quantized
activations: an approximation of the ONNX semantics (dequantize the weight, then a float
``MatMul``), which the converted torch graph follows exactly. On
``models/transformers/bert_trigger_w8.onnx`` (every MatMul weight int8, onnxruntime 1.32) the
logits differ from torch by 1.2e-3 at a scale of 3.6 with extended or all optimizations, and
by 4.8e-7 with basic ones or none.

So the parity check, the cross-check and the token results' recompute run a graph with
weight-only quantized MatMuls at ``ORT_ENABLE_BASIC`` (constant folding and removal of
redundant nodes, no fusions), and every other graph at full optimization, as onnxruntime
runs it by default. The level and why are stated in ``report.json`` (the ``parity`` object),
where the parity check also gives the deviation at full optimization, as information.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import onnxruntime as ort

#: Ops a weight may pass through between its DequantizeLinear and the MatMul (layout only).
_LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Identity", "Cast", "Squeeze", "Unsqueeze"})
_MATMULS = frozenset({"MatMul", "Gemm"})
_INTEGERS = frozenset(
    {
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.INT16,
        onnx.TensorProto.UINT16,
        onnx.TensorProto.INT4,
        onnx.TensorProto.UINT4,
    }
)
_LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
}


@dataclass(frozen=True)
class ReferenceLevel:
    """The onnxruntime optimization level of the reference, and why.

    Attributes:
        name: ``"all"`` (onnxruntime's default) or ``"basic"``.
        reason: why, one line (empty for ``"all"``).
    """

    name: str = "all"
    reason: str = ""

    def session_options(self) -> ort.SessionOptions:
        """Session options at this level (onnxruntime logging only FATAL, threads that
        sleep when idle: see :func:`quiet_session_options`)."""
        options = quiet_session_options()
        options.graph_optimization_level = _LEVELS[self.name]
        return options


def quiet_session_options() -> ort.SessionOptions:
    """onnxruntime logging only FATAL; its idle pool threads sleep instead of spinning.

    A spinning thread takes a core that the other processes of a shared machine (or the
    torch threads of this one) want; ``import onnx_am`` shortens the spinning of torch's OpenMP
    threads for the same reason (``benchmarks/results/wait_policy_loaded.md``).
    """
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


FULL = ReferenceLevel()


def reference_level(model: onnx.ModelProto) -> ReferenceLevel:
    """``basic`` for a graph with weight-only quantized MatMuls (see the module docstring),
    else ``all``."""
    count = len(weight_only_matmuls(model))
    if not count:
        return FULL
    return ReferenceLevel(
        "basic",
        f"{count} MatMul(s) with a DequantizeLinear integer weight: onnxruntime's fusion of "
        "them (MatMulNBits) quantizes the activations, so the reference runs at "
        "ORT_ENABLE_BASIC, the ONNX semantics",
    )


def weight_only_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul / Gemm nodes of the main graph that read a ``DequantizeLinear`` of
    an integer initializer or constant (through layout ops only)."""
    graph = model.graph
    integers = {t.name for t in graph.initializer if t.data_type in _INTEGERS}
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None and value.data_type in _INTEGERS:
                integers.add(node.output[0])
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found, seen = [], set()
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in integers:
            continue
        frontier = list(node.output)
        while frontier:
            tensor = frontier.pop()
            for user in consumers.get(tensor, []):
                if user.op_type in _MATMULS and id(user) not in seen:
                    seen.add(id(user))
                    found.append(user.name or user.output[0])
                elif user.op_type in _LAYOUT_OPS:
                    frontier.extend(user.output)
    return found


__all__ = [
    "FULL",
    "ReferenceLevel",
    "quiet_session_options",
    "reference_level",
    "weight_only_matmuls",
]
