"""Which nodes take one value for the whole batch that is computed from the optimized input.

An ``If`` condition (and a ``Loop``'s trip count and condition) is one value for the whole
batch. When it is computed from the optimized input, a batch would run every row down the
branch of one of them: such graphs run row by row, each row deciding for itself
(:func:`onnx_am.importer.batching.decide_batching`), and the report says that the unit's
function has a branch.
"""

from __future__ import annotations

import onnx

from onnx_am.importer.converters.control_flow import bodies, free_names

#: Ops whose outputs depend on their input's shape only, not on its values.
SHAPE_ONLY = frozenset({"Shape", "Size"})


def value_dependent(graph: onnx.GraphProto, sources: set[str]) -> set[str]:
    """Tensors of ``graph`` whose values depend on the values of ``sources``."""
    dependent = set(sources)
    for node in graph.node:
        reads = [*node.input, *[name for body in bodies(node) for name in free_names(body)]]
        if node.op_type not in SHAPE_ONLY and any(name in dependent for name in reads):
            dependent.update(name for name in node.output if name)
    return dependent


def data_dependent_control(model: onnx.ModelProto, input_name: str) -> list[str]:
    """Names (op type when unnamed) of the top-level ``If`` / ``Loop`` nodes that decide on
    values computed from ``input_name``; a node holding nested control flow counts when its
    body reads such values at all (the nested decision may depend on them)."""
    dependent = value_dependent(model.graph, {input_name})
    found = []
    for node in model.graph.node:
        if node.op_type not in ("If", "Loop"):
            continue
        deciding = list(node.input[:1] if node.op_type == "If" else node.input[:2])
        nested = any(
            inner.op_type in ("If", "Loop", "Scan") for body in bodies(node) for inner in body.node
        )
        reads = [*node.input, *[n for body in bodies(node) for n in free_names(body)]]
        if any(name in dependent for name in (reads if nested else deciding)):
            found.append(node.name or node.op_type)
    return found


def batch_wide_bounds(model: onnx.ModelProto, input_name: str) -> list[str]:
    """Names of the ``Clip`` nodes whose min / max is computed from ``input_name``.

    onnxruntime takes one bound for the whole batch, so a bound computed from the input
    (``Clip(x, ReduceMax(x) - 80)``) mixes the rows of a batch; the probe of two random rows
    rarely shows it (the floor seldom binds), so such graphs run row by row.
    """
    dependent = value_dependent(model.graph, {input_name})
    return [
        node.name or node.op_type
        for node in model.graph.node
        if node.op_type == "Clip" and any(name in dependent for name in node.input[1:3])
    ]
