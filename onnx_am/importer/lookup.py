"""Find an embedding lookup (or a one-hot) in an ONNX graph and the matrix it reads.

A token model turns integer ids into float vectors in one of two ways:

- ``Gather(E, ids)`` with a constant ``[V, D]`` matrix ``E`` (an initializer, possibly behind
  ``DequantizeLinear``, ``Cast`` or any other chain of constant-only nodes);
- ``OneHot(ids, depth, values)`` along the last axis: row ``v`` of the (implicit) ``[V, V]``
  matrix is ``off`` everywhere and ``on`` at ``v``;
- ``Cast(Equal(ids[..., None], c))`` with a constant ``c`` of shape ``[1, ..., 1, V]`` (the
  one-hot jax2tf writes, e.g. in magika's byte model): row ``v`` is ``c == v``.

Between the int graph input and the indices, shape-only ops are walked through, and so is the
negative-index wrap ``where(ids < 0, ids + V, ids)`` that Keras 3's ``Embedding`` writes (as
``Where``, or as tf2onnx's ``Cast(Less) * (ids + V) + ids * Cast(Not(Less))``): it is ``ids``
for every valid id.

Either way, the tensor the model computes for a sequence of ids is ``E[ids]``: a
:class:`Lookup` records ``E``, the int graph input the ids come from, and the tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnx_am.importer.input_spec import FLOAT_TYPES, graph_inputs

#: Ops walked through between the int graph input and the lookup's indices.
INDEX_PASS_THROUGH = frozenset(
    {"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Clip", "Expand"}
)
#: The largest vocabulary a one-hot may have.
MAX_ONE_HOT = 65536
#: Ops walked through between the lookup and the tensor the search sets.
VALUE_PASS_THROUGH = frozenset({"Cast", "Identity"})
#: A matrix larger than this many elements is not read (a vocabulary of 250k x 1024 fits).
MAX_MATRIX_ELEMENTS = 2**28


@dataclass(frozen=True)
class Lookup:
    """An embedding lookup or one-hot whose output the token search sets.

    Attributes:
        tensor: the ONNX tensor that holds ``matrix[ids]``.
        ids_input: the int graph input the ids come from.
        kind: ``"embedding"`` or ``"onehot"``.
        matrix: ``[V, D]`` float32, row ``v`` is what token ``v`` becomes.
    """

    tensor: str
    ids_input: str
    kind: str
    matrix: np.ndarray

    @property
    def vocab_size(self) -> int:
        return int(self.matrix.shape[0])

    def describe(self) -> str:
        v, d = self.matrix.shape
        return f"{self.kind} lookup {self.tensor!r} ({v} tokens x {d}) of input {self.ids_input!r}"


def find_lookup(model: onnx.ModelProto, tensor: str) -> Lookup | None:
    """The lookup that produces ``tensor`` (through Cast / Identity), or ``None``."""
    producers = _producers(model)
    node = producers.get(tensor)
    while node is not None and node.op_type in VALUE_PASS_THROUGH:
        node = producers.get(node.input[0])
    if node is None:
        return None
    if node.op_type == "Gather" and _attribute(node, "axis", 0) == 0 and len(node.input) == 2:
        matrix = constant_value(model, node.input[0])
        if matrix is None or matrix.ndim != 2 or matrix.dtype.kind not in "fiu":
            return None
        kind = "embedding"
        indices = node.input[1]
    elif node.op_type == "OneHot" and _attribute(node, "axis", -1) == -1:
        matrix = _one_hot_matrix(model, node)
        if matrix is None:
            return None
        kind = "onehot"
        indices = node.input[0]
    elif node.op_type == "Equal" and node.output[0] != tensor:  # behind a Cast to float
        found = _equal_one_hot(model, producers, node)
        if found is None:
            return None
        matrix, indices = found
        kind = "onehot"
    else:
        return None
    source = _int_input(model, producers, indices)
    if source is None:
        return None
    return Lookup(tensor, source, kind, np.ascontiguousarray(matrix, dtype=np.float32))


def lookup_candidates(model: onnx.ModelProto) -> list[Lookup]:
    """Every Gather / OneHot / Equal one-hot of an int graph input whose table is constant,
    in graph order (the tensor after any Cast that follows it)."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = []
    for node in model.graph.node:
        if node.op_type not in ("Gather", "OneHot", "Equal") or not node.output:
            continue
        tensor = node.output[0]
        after = consumers.get(tensor, [])
        if len(after) == 1 and after[0].op_type == "Cast":
            tensor = after[0].output[0]
        lookup = find_lookup(model, tensor)
        if lookup is not None:
            found.append(lookup)
    return found


def constant_value(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    """The value of ``name`` when it depends on initializers and Constants only (evaluated
    with onnxruntime), else ``None``."""
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    if name in initializers:
        return _checked(numpy_helper.to_array(initializers[name]))
    producers = _producers(model)
    nodes, stack, seen = [], [name], set()
    while stack:
        current = stack.pop()
        if current in seen or current in initializers or current == "":
            continue
        seen.add(current)
        node = producers.get(current)
        if node is None or node.op_type in ("If", "Loop", "Scan") or len(nodes) > 16:
            return None
        nodes.append(node)
        stack.extend(node.input)
    used = {n for node in nodes for n in node.input}
    return _evaluate(model, nodes, [initializers[n] for n in used if n in initializers], name)


def _evaluate(model, nodes, initializers, name) -> np.ndarray | None:
    import onnxruntime as ort

    order = [node for node in model.graph.node if any(node is n for n in nodes)]
    graph = onnx.helper.make_graph(
        order, "constant", [], [onnx.ValueInfoProto(name=name)], initializer=initializers
    )
    small = onnx.helper.make_model(graph, opset_imports=model.opset_import)
    small.ir_version = model.ir_version
    try:
        session = ort.InferenceSession(
            small.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        return _checked(session.run([name], {})[0])
    except Exception:  # a chain onnxruntime refuses is simply not a constant table
        return None


def _checked(array: np.ndarray) -> np.ndarray | None:
    if array.size > MAX_MATRIX_ELEMENTS:
        return None
    return array


def _one_hot_matrix(model: onnx.ModelProto, node: onnx.NodeProto) -> np.ndarray | None:
    depth = constant_value(model, node.input[1])
    values = constant_value(model, node.input[2])
    if depth is None or values is None or depth.size != 1 or values.size != 2:
        return None
    size = int(depth.reshape(-1)[0])
    if not 1 <= size <= 65536:
        return None
    off, on = (float(v) for v in values.reshape(-1))
    matrix = np.full((size, size), off, dtype=np.float32)
    np.fill_diagonal(matrix, on)
    return matrix


def _equal_one_hot(model, producers, node: onnx.NodeProto) -> tuple[np.ndarray, str] | None:
    """``(matrix, indices)`` of ``Equal(indices, c)`` (either order) with ``c`` a constant of
    shape ``[1, ..., 1, V]`` holding ids ``0 <= c < MAX_ONE_HOT`` and ``indices`` from an int
    graph input; ``None`` otherwise."""
    for indices, other in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
        if _int_input(model, producers, indices) is None:
            continue
        values = constant_value(model, other)
        if values is None or values.ndim < 1 or values.dtype.kind not in "iu":
            continue
        if any(d != 1 for d in values.shape[:-1]) or values.shape[-1] < 2:
            continue
        ids = values.reshape(-1).astype(np.int64)
        if ids.min() < 0 or ids.max() >= MAX_ONE_HOT:
            continue
        rows = np.arange(int(ids.max()) + 1)[:, None]
        return (rows == ids[None, :]).astype(np.float32), indices
    return None


def _int_input(model, producers, name: str) -> str | None:
    inputs = {
        value.name: value
        for value in graph_inputs(model)
        if value.type.tensor_type.elem_type not in FLOAT_TYPES
    }
    for _ in range(16):
        if name in inputs:
            return name
        node = producers.get(name)
        if node is None or not node.input:
            return None
        if node.op_type in INDEX_PASS_THROUGH:
            name = node.input[0]
            continue
        name = _negative_index_wrap(model, producers, node)
        if name is None:
            return None
    return None


def _negative_index_wrap(model, producers, node: onnx.NodeProto) -> str | None:
    """``x`` when ``node`` computes ``where(x < 0, ..., x)``, which is ``x`` for ids >= 0:
    ``Where(Less(x, 0), a, x)`` or ``Cast(Less(x, 0)) * a + x * Cast(Not(Less(x, 0)))``
    (operands in either order, ``x`` possibly behind Casts); else ``None``."""
    if node.op_type == "Where" and len(node.input) == 3:
        less = _less_than_zero(model, producers, node.input[0])
        if less is not None and _same(producers, node.input[2], less):
            return node.input[2]
        return None
    if node.op_type != "Add" or len(node.input) != 2:
        return None
    terms = [producers.get(name) for name in node.input]
    if any(term is None or term.op_type != "Mul" for term in terms):
        return None
    for negative, kept in (terms, terms[::-1]):
        for flag in negative.input:
            x = _less_than_zero(model, producers, _strip_casts(producers, flag))
            if x is None:
                continue
            for gate, ids in ((kept.input[0], kept.input[1]), (kept.input[1], kept.input[0])):
                inverse = producers.get(_strip_casts(producers, gate))
                if (
                    inverse is not None
                    and inverse.op_type == "Not"
                    and _same(producers, inverse.input[0], flag)
                    and _same(producers, ids, x)
                ):
                    return ids
    return None


def _less_than_zero(model, producers, name: str) -> str | None:
    """``x`` when ``name`` is ``Less(x, 0)``, else ``None``."""
    node = producers.get(name)
    if node is None or node.op_type != "Less" or len(node.input) != 2:
        return None
    bound = constant_value(model, node.input[1])
    if bound is None or bound.size != 1 or float(bound.reshape(-1)[0]) != 0.0:
        return None
    return node.input[0]


def _strip_casts(producers, name: str) -> str:
    node = producers.get(name)
    while node is not None and node.op_type == "Cast":
        name = node.input[0]
        node = producers.get(name)
    return name


def _same(producers, first: str, second: str) -> bool:
    """Whether two tensors are the same one behind Casts."""
    return _strip_casts(producers, first) == _strip_casts(producers, second)


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {name: node for node in model.graph.node for name in node.output}


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(attribute.i)
    return default
