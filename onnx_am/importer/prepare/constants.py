"""Pre-passes over constants: refuse absurd sizes, turn weights into initializers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from onnx_am.errors import ModelLoadError
from onnx_am.importer.prepare.util import constant_arrays, constant_attribute

#: Largest tensor a shape-producing node with constant shape may create (elements).
MAX_CONSTANT_ELEMENTS = 2**28

#: ConstantOfShape nodes up to this many elements are folded into initializers.
MAX_FOLDED_ELEMENTS = 2**24


def refuse_huge_constants(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Refuse ``ConstantOfShape``/``Expand`` nodes whose constant shape is absurdly large.

    Such a node (``ConstantOfShape`` of 10^12 elements) would exhaust memory at the first
    run, in torch and in onnxruntime alike; better to say so before anything runs.
    """
    constants = constant_arrays(model)
    for node in model.graph.node:
        index = {"ConstantOfShape": 0, "Expand": 1}.get(node.op_type)
        if index is None or len(node.input) <= index or node.input[index] not in constants:
            continue
        shape = constants[node.input[index]].astype(np.float64).reshape(-1)
        elements = float(np.prod(np.maximum(shape, 1))) if shape.size else 1.0
        if elements > MAX_CONSTANT_ELEMENTS:
            raise ModelLoadError(
                f"node {node.name!r} ({node.op_type}) would create a tensor of shape "
                f"{shape.astype(np.int64).tolist()} ({elements:.3g} elements), more than the "
                f"{MAX_CONSTANT_ELEMENTS} onnx-am will allocate"
            )
    return model, []


def constants_to_initializers(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Turn ``Constant`` nodes (and ``ConstantOfShape`` of constant shape) into initializers.

    Old model-zoo graphs carry their weights this way; onnx2torch needs them as initializers
    to build layers with parameters. Tensor names are kept, so Netron's names still apply.
    """
    moved = _nodes_to_initializers(model, _constant_value)
    note = f"moved {moved} Constant/ConstantOfShape node(s) to initializers"
    return model, [note] if moved else []


def fold_initializer_identities(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Replace ``Identity(initializer)`` by a copy of the initializer under the output name.

    The legacy torch exporter deduplicates equal weights (often the zero biases of folded
    BatchNorms) and feeds the copies through Identity nodes; onnx2torch needs Conv/Gemm
    weights to be initializers.
    """
    folded = _nodes_to_initializers(model, _identity_source)
    return model, [f"folded {folded} Identity node(s) of initializers"] if folded else []


def _nodes_to_initializers(
    model: onnx.ModelProto,
    value_of: Callable[[onnx.NodeProto, dict[str, onnx.TensorProto]], onnx.TensorProto | None],
) -> int:
    """Replace every node for which ``value_of(node, constants)`` gives a tensor by an
    initializer of that value named after the node's output; returns how many."""
    graph = model.graph
    constants: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
    kept, moved = [], 0
    for node in graph.node:
        value = value_of(node, constants)
        if value is None:
            kept.append(node)
            continue
        tensor = onnx.TensorProto()
        tensor.CopyFrom(value)
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        constants[tensor.name] = tensor
        moved += 1
    if moved:
        del graph.node[:]
        graph.node.extend(kept)
    return moved


def _identity_source(
    node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]
) -> onnx.TensorProto | None:
    return constants.get(node.input[0]) if node.op_type == "Identity" and node.input else None


def _constant_value(
    node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]
) -> onnx.TensorProto | None:
    if node.op_type == "Constant" and node.domain == "":
        return constant_attribute(node)
    if node.op_type == "ConstantOfShape" and node.input and node.input[0] in constants:
        shape = numpy_helper.to_array(constants[node.input[0]]).astype("int64").reshape(-1)
        if shape.size and int(np.prod(shape.astype(np.float64))) > MAX_FOLDED_ELEMENTS:
            return None
        attribute = next((a for a in node.attribute if a.name == "value"), None)
        value = numpy_helper.to_array(attribute.t) if attribute else np.zeros(1, np.float32)
        return numpy_helper.from_array(np.full(shape.tolist(), value.reshape(-1)[0], value.dtype))
    return None
