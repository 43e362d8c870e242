"""ONNX-side pre-passes that make a model convertible without changing what it computes.

Each pass takes a model and returns ``(model, notes)``; the original is never modified.
Parity with onnxruntime on the *original* model checks that the passes were sound.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper, version_converter

from onnx_am.input_spec import InputSpec

#: Models below this default-domain opset are upgraded first (onnx2torch covers 11+ best).
MIN_OPSET = 11
UPGRADE_TO = 13


def prepare_model(model: onnx.ModelProto, spec: InputSpec | None = None) -> tuple[onnx.ModelProto, list[str]]:
    """Run all pre-passes on a copy of ``model``; return it and one note per change."""
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    notes: list[str] = []
    for prepass in (name_nodes, upgrade_opset, constants_to_initializers):
        prepared, new_notes = prepass(prepared)
        notes.extend(new_notes)
    return prepared, notes


def name_nodes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Give every node a unique name, so that nodes can be addressed by name."""
    seen: set[str] = set()
    renamed = 0
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            base = node.name or f"{node.op_type}_{index}"
            name, suffix = base, 1
            while name in seen:
                name, suffix = f"{base}__{suffix}", suffix + 1
            node.name = name
            renamed += 1
        seen.add(node.name)
    return model, [f"named {renamed} unnamed or duplicate node(s)"] if renamed else []


def default_opset(model: onnx.ModelProto) -> int:
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)


def upgrade_opset(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Upgrade models older than opset 11 to opset 13 with onnx's version converter."""
    old = default_opset(model)
    if old == 0 or old >= MIN_OPSET:
        return model, []
    try:
        upgraded = version_converter.convert_version(model, UPGRADE_TO)
    except Exception:  # noqa: BLE001 - onnx raises assorted errors; conversion reports the ops
        return model, [f"could not upgrade opset {old} to {UPGRADE_TO}; converting as is"]
    return upgraded, [f"upgraded opset {old} to {UPGRADE_TO}"]


def constants_to_initializers(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Turn ``Constant`` nodes (and ``ConstantOfShape`` of constant shape) into initializers.

    Old model-zoo graphs carry their weights this way; onnx2torch needs them as initializers
    to build layers with parameters. Tensor names are kept, so Netron's names still apply.
    """
    graph = model.graph
    constants: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
    kept, moved = [], 0
    for node in graph.node:
        tensor = _constant_value(node, constants)
        if tensor is None:
            kept.append(node)
            continue
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        constants[tensor.name] = tensor
        moved += 1
    if moved:
        del graph.node[:]
        graph.node.extend(kept)
    return model, [f"moved {moved} Constant/ConstantOfShape node(s) to initializers"] if moved else []


def _constant_value(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> onnx.TensorProto | None:
    if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
        attribute = next((a for a in node.attribute if a.name == "value"), None)
        if attribute is None:
            return None
        tensor = onnx.TensorProto()
        tensor.CopyFrom(attribute.t)
        return tensor
    if node.op_type == "ConstantOfShape" and node.input and node.input[0] in constants:
        shape = numpy_helper.to_array(constants[node.input[0]]).astype("int64")
        if shape.size and int(shape.prod()) > 2**24:
            return None
        attribute = next((a for a in node.attribute if a.name == "value"), None)
        fill = numpy_helper.to_array(attribute.t).reshape(-1)[0] if attribute else 0.0
        dtype = numpy_helper.to_array(attribute.t).dtype if attribute else np.float32
        return numpy_helper.from_array(np.full(shape.tolist(), fill, dtype=dtype))
    return None
