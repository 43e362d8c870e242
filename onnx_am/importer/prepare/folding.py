"""Pre-pass: fold what is constant once the other inputs are fixed, with onnxscript's folder.

An ``If`` whose condition depends only on inputs held at a value (a voice-activity model
branching on its sample rate ``sr``), and the shape arithmetic around it, are constant for
activation maximization. onnxscript's constant folding (a maintained optimizer, backed by
the ONNX reference evaluator) evaluates them and inlines the branch taken; nothing here
evaluates ops by hand. Tensor names are kept, so targets by ONNX name still apply.

The folder runs only where it is needed (control flow in the graph, or inputs held at fed
values), so every other model is converted exactly as it was written.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from onnx_am.importer.prepare.fed_inputs import feeds_to_initializers
from onnx_am.importer.prepare.naming import name_nodes

#: Ops that onnx2torch cannot convert but folding can remove when their inputs are constant.
CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan"})


def has_control_flow(model: onnx.ModelProto) -> bool:
    """Whether the main graph holds an ``If``, ``Loop`` or ``Scan`` node."""
    return any(node.op_type in CONTROL_FLOW_OPS for node in model.graph.node)


def fold_constants(
    model: onnx.ModelProto, values: Mapping[str, np.ndarray] | None = None
) -> tuple[onnx.ModelProto, list[str]]:
    """Hold the inputs in ``values`` at those values, then fold every constant subgraph.

    Args:
        model: modified in place (``prepare_model`` passes a copy).
        values: input name -> array; those inputs become initializers before folding.

    Returns:
        The model and notes on what changed (inputs held, branches inlined, node counts).
    """
    notes: list[str] = []
    if values:
        model, notes = feeds_to_initializers(model, values)
    from onnxscript.optimizer import fold_constants as onnxscript_fold  # slow import: lazily

    before = _op_counts(model)
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    if not onnxscript_fold(folded).modified:  # folds the proto in place
        return model, notes
    after = _op_counts(folded)
    inlined = {op: before[op] - after.get(op, 0) for op in CONTROL_FLOW_OPS if op in before}
    inlined = {op: n for op, n in inlined.items() if n}
    detail = ", ".join(f"{n} {op} resolved" for op, n in inlined.items())
    notes.append(
        f"folded constants with onnxscript: {sum(before.values())} -> {sum(after.values())} "
        f"node(s)" + (f" ({detail})" if detail else "")
    )
    folded, renamed = name_nodes(folded)
    return folded, notes + renamed


def fold_where_needed(
    model: onnx.ModelProto, fed: bool = False
) -> tuple[onnx.ModelProto, list[str]]:
    """:func:`fold_constants` when the graph has control flow or inputs were fed, else nothing."""
    if not (fed or has_control_flow(model)):
        return model, []
    return fold_constants(model)


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
