"""Small helpers the pre-passes share: attributes, constants, inferred shapes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnx_am.importer.input_spec import InputSpec


def default_opset(model: onnx.ModelProto) -> int:
    """The opset version of the default ONNX domain (0 when not declared)."""
    return next(
        (entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0
    )


def constant_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Small integer constants (initializers and Constant nodes) by tensor name."""
    found: dict[str, np.ndarray] = {}
    tensors = [(t.name, t) for t in model.graph.initializer]
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                tensors.append((node.output[0], value))
    for name, tensor in tensors:
        if tensor.data_type == onnx.TensorProto.INT64 and len(tensor.dims) <= 1:
            try:
                found[name] = numpy_helper.to_array(tensor)
            except (ValueError, TypeError):
                continue
    return found


def constant_attribute(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """The tensor a ``Constant`` node holds, whichever attribute spells it."""
    for attribute in node.attribute:
        if attribute.name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attribute.t)
            return tensor
        if attribute.name in ("value_float", "value_int"):
            dtype = np.float32 if attribute.name == "value_float" else np.int64
            scalar = attribute.f if attribute.name == "value_float" else attribute.i
            return numpy_helper.from_array(np.array(scalar, dtype=dtype))
        if attribute.name in ("value_floats", "value_ints"):
            dtype = np.float32 if attribute.name == "value_floats" else np.int64
            values = attribute.floats if attribute.name == "value_floats" else attribute.ints
            return numpy_helper.from_array(np.array(list(values), dtype=dtype))
    return None


def infer_shapes(model: onnx.ModelProto, spec: InputSpec) -> dict[str, list[int]]:
    """Concrete shapes of every tensor for one sample of ``spec`` (batch 1), where inferable."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for value in probe.graph.input:
        if value.name == spec.name:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, (1, *spec.sample_shape), strict=False):
                dim.Clear()
                dim.dim_value = size
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort; unknown shapes stay unknown
        return {}
    shapes = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [int(d.dim_value) for d in dims]
    return shapes


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def set_attribute(node: onnx.NodeProto, name: str, value) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    if value is not None:
        node.attribute.append(onnx.helper.make_attribute(name, value))
