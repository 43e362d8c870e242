"""Pre-pass: fold what is constant once the other inputs and the input's shape are fixed.

An ``If`` whose condition depends only on inputs held at a value (a voice-activity model
branching on its sample rate ``sr``), or on the *shape* of the optimized input (silero-vad's
decoder squeezes its time axis when the encoder produced one frame), and the shape
arithmetic around it, are constant for activation maximization: every sample has the same
shape. onnxscript's constant folding (a maintained optimizer, backed by the ONNX reference
evaluator and ONNX shape inference) evaluates them and inlines the branch taken; nothing here
evaluates ops by hand. Tensor names are kept, so targets by ONNX name still apply.

The folder sees the optimized input with its sample dims declared static and its batch dim
left as declared (symbolic), so shapes are propagated through the graph but nothing that
depends on the batch becomes a constant: batches still run.

The folder runs only where it is needed (control flow in the graph, or inputs held at fed
values), so every other model is converted exactly as it was written.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from onnx_am.importer.input_spec import InputSpec
from onnx_am.importer.prepare.fed_inputs import feeds_to_initializers
from onnx_am.importer.prepare.naming import name_nodes

#: Ops that onnx2torch cannot convert but folding can remove when their inputs are constant.
CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan"})

#: Shape queries that become constants once the input's sample shape is declared.
SHAPE_OPS = frozenset({"Shape", "Size"})

#: onnxscript keeps ``ConstantOfShape`` by default (to keep files small); outputs up to this
#: many elements are shape arithmetic (silero-vad builds its ``Pad`` pads with one) and fold.
MAX_FOLDED_FILL = 1024


def has_control_flow(model: onnx.ModelProto) -> bool:
    """Whether the main graph holds an ``If``, ``Loop`` or ``Scan`` node."""
    return any(node.op_type in CONTROL_FLOW_OPS for node in model.graph.node)


def fold_constants(
    model: onnx.ModelProto,
    values: Mapping[str, np.ndarray] | None = None,
    spec: InputSpec | None = None,
) -> tuple[onnx.ModelProto, list[str]]:
    """Hold the inputs in ``values`` at those values, then fold every constant subgraph.

    Args:
        model: modified in place (``prepare_model`` passes a copy).
        values: input name -> array; those inputs become initializers before folding.
        spec: the optimized input; its sample dims are declared static in the folded model
            (the batch dim stays as declared), so ops on its shape fold too.

    Returns:
        The model and notes on what changed (inputs held, shape declared, branches inlined,
        node counts).
    """
    notes: list[str] = []
    if values:
        model, notes = feeds_to_initializers(model, values)
    from onnxscript.optimizer import fold_constants as onnxscript_fold  # slow import: lazily

    before = _op_counts(model)
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    declared = declare_sample_shape(folded, spec) if spec is not None else None
    result = onnxscript_fold(  # folds the proto in place
        folded, onnx_shape_inference=declared is not None, should_fold=_fold_small_fills
    )
    if not result.modified:
        return model, notes
    after = _op_counts(folded)
    resolved = {
        op: before.get(op, 0) - after.get(op, 0) for op in sorted(CONTROL_FLOW_OPS | SHAPE_OPS)
    }
    detail = ", ".join(f"{n} {op} resolved" for op, n in resolved.items() if n > 0)
    notes.append(
        f"folded constants with onnxscript: {sum(before.values())} -> {sum(after.values())} "
        f"node(s)"
        + (f" with {spec.name} of shape [{', '.join(map(str, declared))}]" if declared else "")
        + (f" ({detail})" if detail else "")
    )
    folded, renamed = name_nodes(folded)
    return folded, notes + renamed


def declare_sample_shape(model: onnx.ModelProto, spec: InputSpec) -> list[int | str] | None:
    """Declare the sample dims of ``spec``'s graph input static, in place.

    The batch dim keeps its declaration (a name, unknown, or a number), so shape inference
    and folding do not turn batch-dependent shapes into constants.

    Returns:
        The shape now declared (the batch as a name or ``"?"``), or ``None`` when the graph
        has no input named ``spec.name`` or its rank does not match.
    """
    value = next((v for v in model.graph.input if v.name == spec.name), None)
    if value is None or not spec.sample_shape:
        return None
    dims = value.type.tensor_type.shape.dim
    if len(dims) != 1 + len(spec.sample_shape):
        return None
    for dim, size in zip(list(dims)[1:], spec.sample_shape, strict=True):
        dim.Clear()
        dim.dim_value = size
    batch = dims[0]
    first: int | str = batch.dim_value if batch.HasField("dim_value") else batch.dim_param or "?"
    return [first, *spec.sample_shape]


def _fold_small_fills(node) -> bool | None:
    """onnxscript's ``should_fold`` hook: fold a ``ConstantOfShape`` with a small output.

    Returns ``None`` (onnxscript's default rules) for every other node.
    """
    if node.op_type != "ConstantOfShape" or node.domain not in ("", "ai.onnx"):
        return None
    shape = node.inputs[0].const_value if node.inputs and node.inputs[0] is not None else None
    if shape is None:
        return None
    return int(np.prod(shape.numpy(), dtype=np.int64)) <= MAX_FOLDED_FILL or None


def fold_where_needed(
    model: onnx.ModelProto, fed: bool = False, spec: InputSpec | None = None
) -> tuple[onnx.ModelProto, list[str]]:
    """:func:`fold_constants` when the graph has control flow or inputs were fed, else nothing."""
    if not (fed or has_control_flow(model)):
        return model, []
    return fold_constants(model, spec=spec)


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Nodes by op type, in the main graph and every branch or loop body."""
    counts: dict[str, int] = {}
    graphs = [model.graph]
    while graphs:
        for node in graphs.pop().node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
            graphs += [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
            graphs += [g for a in node.attribute for g in a.graphs]
    return counts
