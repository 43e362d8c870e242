"""Check an untrusted model once, at the boundary, before any pass, rule or library reads it.

After :func:`validate_model` every name is valid UTF-8 without NUL, every tensor has a known
dtype, non-negative dims and as many values as its dims declare, every node of a known op has
as many inputs and outputs as its schema allows (no empty name for a required input), and
every attribute has the type its schema declares. The attributes and constant inputs that
onnx-am's pre-passes and rules read, and those that size tensors, are range-checked by
:mod:`onnx_am.importer.validation_ops`.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from onnx import defs

from onnx_am.errors import ModelLoadError, shown
from onnx_am.importer.limits import check_elements
from onnx_am.importer.validation_ops import check_node_values

#: Highest opset version accepted for any domain (the default domain is near 25 in 2026).
MAX_OPSET = 1000
_DTYPES = set(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}
_ATTRIBUTE_TYPES = set(onnx.AttributeProto.AttributeType.values()) - {0}
_TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")
_SUB_BYTE = {
    getattr(onnx.TensorProto, name)
    for name in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
    if hasattr(onnx.TensorProto, name)
}


def validate_model(model: onnx.ModelProto) -> None:
    """Raise :class:`ModelLoadError` (or ``ResourceLimitError``) naming the first problem.

    Args:
        model: a parsed model whose external data is already loaded.
    """
    for text, what in [
        (model.producer_name, "producer name"),
        (model.producer_version, "producer version"),
        (model.domain, "model domain"),
    ]:
        check_name(text, what)
    for entry in model.metadata_props:
        check_name(entry.key, "metadata key")
        check_name(entry.value, f"metadata value of {shown(entry.key)}")
    for entry in model.opset_import:
        check_name(entry.domain, "opset domain")
        if not 1 <= entry.version <= MAX_OPSET:
            raise ModelLoadError(
                f"opset version {entry.version} of domain {shown(entry.domain or 'ai.onnx')} "
                f"is not between 1 and {MAX_OPSET}"
            )
    opsets = {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
    for graph in walk_graphs(model.graph):
        _check_graph(graph, opsets)


def walk_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph held by a node attribute, depth first."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from walk_graphs(attribute.g)
            for subgraph in attribute.graphs:
                yield from walk_graphs(subgraph)


def check_name(text: str | bytes, what: str) -> None:
    """A name must be valid UTF-8 (protobuf hands invalid UTF-8 over as bytes), without NUL."""
    if isinstance(text, bytes):
        raise ModelLoadError(f"{what} {text[:40]!r} is not valid UTF-8")
    if "\0" in text:
        raise ModelLoadError(f"{what} {shown(text)} contains a NUL character")


def _check_graph(graph: onnx.GraphProto, opsets: dict[str, int]) -> None:
    check_name(graph.name, "graph name")
    for value in [*graph.input, *graph.output, *graph.value_info]:
        _check_value(value)
    for tensor in graph.initializer:
        check_tensor(tensor, "initializer")
    for sparse in graph.sparse_initializer:
        check_sparse(sparse, "sparse initializer")
    constants = {tensor.name: tensor for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.output) == 1:
            value = next(
                (a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None
            )
            if value is not None:
                constants[node.output[0]] = value
    for node in graph.node:
        _check_node(node, opsets, constants)


def _check_value(value: onnx.ValueInfoProto) -> None:
    check_name(value.name, "tensor name")
    tensor_type = value.type.tensor_type
    if tensor_type.elem_type and tensor_type.elem_type not in _DTYPES:
        raise ModelLoadError(
            f"tensor {shown(value.name)} has unknown dtype {tensor_type.elem_type}"
        )
    for dim in tensor_type.shape.dim:
        check_name(dim.dim_param, f"a dim of tensor {shown(value.name)}")


def check_tensor(tensor: onnx.TensorProto, what: str) -> None:
    """Name, dtype, dims and the number of values held (external data already loaded)."""
    check_name(tensor.name, f"{what} name")
    label = f"{what} {shown(tensor.name)}"
    if tensor.data_type not in _DTYPES:
        raise ModelLoadError(f"{label} has unknown dtype {tensor.data_type}")
    if any(dim < 0 for dim in tensor.dims):
        raise ModelLoadError(f"{label} declares negative dims {list(tensor.dims)}")
    declared = 1
    for dim in tensor.dims:
        declared *= int(dim)
    if tensor.data_type == onnx.TensorProto.STRING and tensor.HasField("raw_data"):
        raise ModelLoadError(f"{label} is a string tensor with raw data")
    held = _held_elements(tensor)
    if held is not None and held != declared:
        shape = list(tensor.dims)[:8]
        raise ModelLoadError(
            f"{label} declares shape {shape} ({declared} elements) but holds {held}"
            if held >= 0
            else f"{label} has raw data that is not a whole number of {shown(shape)} values"
        )
    check_elements(declared, label)


def check_sparse(sparse: onnx.SparseTensorProto, what: str) -> None:
    check_tensor(sparse.values, f"{what} values")
    check_tensor(sparse.indices, f"{what} indices")
    if any(dim < 0 for dim in sparse.dims):
        raise ModelLoadError(f"{what} {shown(sparse.values.name)} has negative dims")
    dense = 1
    for dim in sparse.dims:
        dense *= int(dim)
    check_elements(dense, f"{what} {shown(sparse.values.name)}")


def _held_elements(tensor: onnx.TensorProto) -> int | None:
    if tensor.data_type == onnx.TensorProto.STRING:
        return len(tensor.string_data)
    if tensor.HasField("raw_data"):
        if tensor.data_type in _SUB_BYTE:
            return None  # packed sub-byte types: left to the converter
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        if len(tensor.raw_data) % itemsize:
            return -1
        return len(tensor.raw_data) // itemsize
    complex_pairs = tensor.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128)
    for name in _TYPED_FIELDS:
        values = getattr(tensor, name)
        if len(values):
            return len(values) // 2 if complex_pairs else len(values)
    return 0


def _check_node(
    node: onnx.NodeProto, opsets: dict[str, int], constants: dict[str, onnx.TensorProto]
) -> None:
    for text, what in [
        (node.name, "node name"),
        (node.op_type, "op type"),
        (node.domain, "domain"),
    ]:
        check_name(text, what)
    label = f"node {shown(node.name)} ({shown(node.op_type, 40)})"
    for name in [*node.input, *node.output]:
        check_name(name, f"a tensor name of {label}")
    if not node.output:
        raise ModelLoadError(f"{label} has no outputs")
    schema = _schema(node, opsets)
    if schema is not None:
        _check_arity(node, schema, label)
    for attribute in node.attribute:
        _check_attribute(attribute, schema, label)
    if schema is not None:
        present = {attribute.name for attribute in node.attribute}
        missing = [n for n, a in schema.attributes.items() if a.required and n not in present]
        if missing:
            raise ModelLoadError(f"{label} lacks the required attribute(s) {missing[:4]}")
    check_node_values(node, label, constants)


def _schema(node: onnx.NodeProto, opsets: dict[str, int]) -> defs.OpSchema | None:
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    version = opsets.get(domain or "ai.onnx", 0)
    if version <= 0:
        return None
    try:
        return defs.get_schema(node.op_type, version, domain)
    except defs.SchemaError:
        return None


def _check_arity(node: onnx.NodeProto, schema: defs.OpSchema, label: str) -> None:
    if not schema.min_input <= len(node.input) <= schema.max_input:
        raise ModelLoadError(
            f"{label} has {len(node.input)} inputs; {node.op_type} takes "
            f"{schema.min_input} to {schema.max_input}"
        )
    if not schema.min_output <= len(node.output) <= schema.max_output:
        raise ModelLoadError(
            f"{label} has {len(node.output)} outputs; {node.op_type} makes "
            f"{schema.min_output} to {schema.max_output}"
        )
    optional = defs.OpSchema.FormalParameterOption.Optional
    for index, name in enumerate(node.input):
        formal = schema.inputs[min(index, len(schema.inputs) - 1)] if schema.inputs else None
        if not name and formal is not None and formal.option != optional:
            raise ModelLoadError(
                f"{label} has an empty name for its required input {index} ({formal.name})"
            )


def _check_attribute(attribute: onnx.AttributeProto, schema, label: str) -> None:
    check_name(attribute.name, f"an attribute name of {label}")
    if attribute.type not in _ATTRIBUTE_TYPES:
        raise ModelLoadError(
            f"attribute {shown(attribute.name)} of {label} has no valid type ({attribute.type})"
        )
    declared = schema.attributes.get(attribute.name) if schema is not None else None
    if declared is not None and int(declared.type.value) != attribute.type:
        expected = onnx.AttributeProto.AttributeType.Name(int(declared.type.value))
        got = onnx.AttributeProto.AttributeType.Name(attribute.type)
        raise ModelLoadError(
            f"attribute {shown(attribute.name)} of {label} is {got}; {expected} expected"
        )
    if attribute.HasField("t"):
        check_tensor(attribute.t, f"attribute {shown(attribute.name)} of {label}:")
    for tensor in attribute.tensors:
        check_tensor(tensor, f"attribute {shown(attribute.name)} of {label}:")
    if attribute.HasField("sparse_tensor"):
        check_sparse(attribute.sparse_tensor, f"attribute {shown(attribute.name)} of {label}:")
    for sparse in attribute.sparse_tensors:
        check_sparse(sparse, f"attribute {shown(attribute.name)} of {label}:")
