"""Mutators for :mod:`fuzz.campaign`: byte-level and protobuf-level changes to a model.

Every mutator takes a :class:`Case` under construction and a ``random.Random`` and changes
the case in place (its model proto, the files beside it, or its serialized bytes); it returns
one short line saying what it did. Families group mutators so that a run covers all of them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Name of the canary file placed in the working directory and the models' parent folder;
#: no model may make onnx-am (or onnxruntime) open it.
CANARY = "canary.bin"

#: Placeholders replaced by invalid UTF-8 of the same length after serialization.
BAD_UTF8 = {"\x01BADUTF8A\x01": b"\xff\xfeBADUTF8", "\x01BADUTF8B\x01": b"x\xc0\xafADUTF8"}

EXTREME_INTS = [0, -1, 1, 2, 3, 7, 2**31 - 1, 2**31, -(2**31), 2**62, -(2**63), 2**63 - 1]
EXTREME_FLOATS = [0.0, -0.0, 1e-45, 1e38, -1e38, float("nan"), float("inf"), -float("inf")]
OP_TYPES = [
    "Relu", "LeakyRelu", "PRelu", "Clip", "Max", "Min", "Sum", "Conv", "MaxPool", "AveragePool",
    "Gemm", "MatMul", "Add", "Mul", "Reshape", "Flatten", "Slice", "Pad", "Transpose",
    "Concat", "Softmax", "Sigmoid", "Constant", "ConstantOfShape", "Identity", "Cast", "Tile",
    "Expand", "Resize", "Squeeze", "Unsqueeze", "ReduceMean", "Gather", "Split", "If", "Loop",
    "BatchNormalization", "GlobalAveragePool", "Dropout", "", "NoSuchOp", "Relu\x00x",
]  # fmt: skip
ATTRIBUTE_NAMES = [
    "alpha", "beta", "axis", "axes", "perm", "strides", "pads", "kernel_shape", "dilations",
    "auto_pad", "ceil_mode", "count_include_pad", "allowzero", "min", "max", "value", "to",
    "group", "transA", "transB", "mode", "keepdims", "split", "num_outputs",
]  # fmt: skip


@dataclass
class Case:
    """One fuzzed model: its proto (or final bytes) and the files beside it.

    Attributes:
        model: the proto being mutated (``None`` once a byte-level mutator took over).
        data: the serialized model after byte-level mutation.
        files: relative path (beside the model) -> content.
        symlinks: relative path -> link target.
        fifos: relative paths of named pipes to create.
        steps: what each mutator did.
    """

    model: onnx.ModelProto | None
    data: bytes | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)
    fifos: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)

    def serialized(self) -> bytes:
        if self.data is not None:
            return self.data
        data = self.model.SerializeToString()
        for marker, bad in BAD_UTF8.items():
            data = data.replace(marker.encode(), bad.ljust(len(marker), b"_"))
        return data


Mutator = Callable[[Case, random.Random], str]


def _graph(case: Case) -> onnx.GraphProto:
    return case.model.graph


def _node(case: Case, rng: random.Random) -> onnx.NodeProto | None:
    nodes = _graph(case).node
    return nodes[rng.randrange(len(nodes))] if nodes else None


def _tensor_names(case: Case) -> list[str]:
    graph = _graph(case)
    names = [v.name for v in graph.input] + [t.name for t in graph.initializer]
    return names + [o for n in graph.node for o in n.output]


def _input_name(case: Case) -> str:
    inits = {t.name for t in _graph(case).initializer}
    real = [v.name for v in _graph(case).input if v.name not in inits]
    return real[0] if real else "x"


# --- bytes -----------------------------------------------------------------------------


def flip_bytes(case: Case, rng: random.Random) -> str:
    data = bytearray(case.serialized())
    count = rng.choice([1, 2, 8, 64])
    for _ in range(count):
        data[rng.randrange(len(data))] = rng.randrange(256)
    case.data, case.model = bytes(data), None
    return f"flipped {count} byte(s)"


def truncate_bytes(case: Case, rng: random.Random) -> str:
    data = case.serialized()
    cut = rng.randrange(len(data))
    case.data, case.model = data[:cut], None
    return f"truncated to {cut} of {len(data)} bytes"


def splice_bytes(case: Case, rng: random.Random) -> str:
    data = case.serialized()
    start, size = rng.randrange(len(data)), rng.choice([1, 4, 16, 256])
    chunk = rng.choice([data[start : start + size], bytes(rng.randrange(256) for _ in range(size))])
    at = rng.randrange(len(data))
    case.data, case.model = data[:at] + chunk + data[at:], None
    return f"inserted {len(chunk)} byte(s) at {at}"


# --- ops and graph structure ------------------------------------------------------------


def change_op(case: Case, rng: random.Random) -> str:
    node = _node(case, rng)
    if node is None:
        return "no node"
    old, node.op_type = node.op_type, rng.choice(OP_TYPES)
    if rng.random() < 0.2:
        node.domain = rng.choice(["", "ai.onnx", "com.microsoft", "org.example"])
    return f"op {node.name!r} {old} -> {node.op_type!r}"


def rewire(case: Case, rng: random.Random) -> str:
    node = _node(case, rng)
    if node is None:
        return "no node"
    choice = rng.randrange(6)
    if choice == 0 and node.output:
        del node.output[rng.randrange(len(node.output))]
        return f"deleted an output of {node.name!r}"
    if choice == 1 and node.input:
        node.input[rng.randrange(len(node.input))] = ""
        return f"emptied an input of {node.name!r}"
    if choice == 2:
        node.input.append(rng.choice(["", "nowhere", *_tensor_names(case)]))
        return f"added an input to {node.name!r}"
    if choice == 3:
        graph = _graph(case)
        index = list(graph.node).index(node)
        del graph.node[index]
        return f"deleted node {node.name!r}"
    if choice == 4 and len(_graph(case).node) > 1:
        nodes = list(_graph(case).node)
        i, j = rng.sample(range(len(nodes)), 2)
        nodes[i], nodes[j] = nodes[j], nodes[i]
        del _graph(case).node[:]
        _graph(case).node.extend(nodes)
        return "swapped two nodes"
    node.output.append(rng.choice(["", "extra", *_tensor_names(case)]))
    return f"added an output to {node.name!r}"


def insert_hostile_node(case: Case, rng: random.Random) -> str:
    """A node known to hurt: huge axes / pads / repeats, empty variadic inputs."""
    graph, x = _graph(case), _input_name(case)
    out = graph.output[0].name if graph.output else "y"
    kind = rng.choice(["slice", "max", "pad", "tile", "expand", "resize", "reshape", "split"])
    big = rng.choice([2**31, 2**62, -(2**63), 2**40, 10**6])
    const = {}
    if kind == "slice":
        const = {"s": [0], "e": [1], "a": [big]}
        node = helper.make_node("Slice", [x, "s", "e", "a"], ["h"], name="hostile")
    elif kind == "max":
        node = helper.make_node(
            rng.choice(["Max", "Min", "Sum", "Mean"]), [x, ""], ["h"], "hostile"
        )
    elif kind == "pad":
        const = {"p": [0, 0, big, big] if rng.random() < 0.5 else [big] * 8}
        node = helper.make_node("Pad", [x, "p"], ["h"], name="hostile")
    elif kind == "tile":
        const = {"r": [1, big, 1, 1][: rng.choice([2, 4])]}
        node = helper.make_node("Tile", [x, "r"], ["h"], name="hostile")
    elif kind == "expand":
        const = {"r": [big, 1, 1, 1]}
        node = helper.make_node("Expand", [x, "r"], ["h"], name="hostile")
    elif kind == "resize":
        scales = numpy_helper.from_array(np.array([1, 1, 1e6, 1e6], np.float32), "sc")
        graph.initializer.append(scales)
        node = helper.make_node("Resize", [x, "", "sc"], ["h"], name="hostile")
    elif kind == "reshape":
        const = {"r": [big, -1]}
        node = helper.make_node("Reshape", [x, "r"], ["h"], name="hostile")
    else:
        const = {"r": [big, 1]}
        node = helper.make_node("Split", [x, "r"], ["h", "h2"], name="hostile", axis=1)
    for name, values in const.items():
        graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), name))
    # put it first and feed it into the first consumer of x, so the graph still connects
    for consumer in graph.node:
        if x in consumer.input:
            consumer.input[list(consumer.input).index(x)] = "h"
            break
    else:
        node.output[0] = out
    graph.node.insert(0, node)
    return f"hostile {kind} node ({big})"


# --- attributes -------------------------------------------------------------------------


def _random_attribute(name: str, rng: random.Random) -> onnx.AttributeProto:
    kind = rng.randrange(8)
    if kind == 0:
        return helper.make_attribute(name, rng.choice(EXTREME_INTS))
    if kind == 1:
        length = rng.choice([0, 1, 2, 3, 4, 5, 8, 9])
        return helper.make_attribute(name, [rng.choice(EXTREME_INTS) for _ in range(length)] or [0])
    if kind == 2:
        return helper.make_attribute(name, rng.choice(EXTREME_FLOATS))
    if kind == 3:
        return helper.make_attribute(name, [rng.choice(EXTREME_FLOATS) for _ in range(3)])
    if kind == 4:
        value = rng.choice(["SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET", "", "bogus", "\x00"])
        return helper.make_attribute(name, value)
    if kind == 5:
        tensor = numpy_helper.from_array(np.array([rng.choice(EXTREME_FLOATS)], np.float32))
        return helper.make_attribute(name, tensor)
    if kind == 6:
        attribute = onnx.AttributeProto(name=name, type=rng.choice([0, 1, 2, 7, 99]))
        return attribute
    graph = helper.make_graph([], "sub", [], [])
    return helper.make_attribute(name, graph)


def mutate_attribute(case: Case, rng: random.Random) -> str:
    node = _node(case, rng)
    if node is None:
        return "no node"
    action = rng.randrange(4)
    if node.attribute and action == 0:
        del node.attribute[rng.randrange(len(node.attribute))]
        return f"deleted an attribute of {node.name!r}"
    name = (
        rng.choice(list(node.attribute)).name
        if node.attribute and action < 3
        else rng.choice(ATTRIBUTE_NAMES)
    )
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    node.attribute.append(_random_attribute(name, rng))
    return f"attribute {name!r} of {node.op_type} {node.name!r} replaced"


def attribute_on_padded_op(case: Case, rng: random.Random) -> str:
    """Conv/pool attributes the SAME-padding and asymmetric-pool pre-passes read."""
    pools = [n for n in _graph(case).node if n.op_type in ("Conv", "MaxPool", "AveragePool")]
    if not pools:
        return mutate_attribute(case, rng)
    node = rng.choice(pools)
    if rng.random() < 0.5:
        node.op_type = rng.choice(["AveragePool", node.op_type])
    name = rng.choice(["strides", "pads", "kernel_shape", "dilations", "auto_pad", "ceil_mode"])
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    if name == "auto_pad":
        node.attribute.append(helper.make_attribute(name, rng.choice(["SAME_UPPER", "VALID", "x"])))
    elif rng.random() < 0.6:
        length = rng.choice([0, 1, 2, 3, 4, 6])
        values = [rng.choice([0, 1, 2, 3, -1, 2**31]) for _ in range(length)]
        if length:
            node.attribute.append(helper.make_attribute(name, values))
    else:
        node.attribute.append(_random_attribute(name, rng))
    return f"{name} of {node.op_type} {node.name!r} changed"


# --- dims and dtypes ------------------------------------------------------------------------


def mutate_dims(case: Case, rng: random.Random) -> str:
    graph = _graph(case)
    if graph.initializer and rng.random() < 0.5:
        tensor = rng.choice(list(graph.initializer))
        dims = list(tensor.dims)
        action = rng.randrange(3)
        if action == 0 and dims:
            dims[rng.randrange(len(dims))] = rng.choice(EXTREME_INTS)
        elif action == 1:
            dims.append(rng.choice([1, 2, 0]))
        else:
            dims = dims[:-1]
        del tensor.dims[:]
        tensor.dims.extend(dims)
        return f"dims of initializer {tensor.name!r} -> {dims}"
    values = list(graph.input) + list(graph.output)
    if not values:
        return "no value"
    value = rng.choice(values)
    shape = value.type.tensor_type.shape
    if shape.dim and rng.random() < 0.8:
        dim = shape.dim[rng.randrange(len(shape.dim))]
        dim.Clear()
        if rng.random() < 0.7:
            dim.dim_value = rng.choice([0, -1, 1, 3, 2**20, 2**40, -(2**62)])
        else:
            dim.dim_param = rng.choice(["N", "", "\x00"])
    else:
        shape.dim.add().dim_value = rng.choice([1, 0, 7])
    return f"dims of {value.name!r} changed"


def mutate_dtype(case: Case, rng: random.Random) -> str:
    graph = _graph(case)
    dtype = rng.choice([0, 2, 3, 6, 7, 8, 9, 10, 11, 14, 16, 17, 21, 22, 23, 100, 1000])
    if graph.initializer and rng.random() < 0.5:
        tensor = rng.choice(list(graph.initializer))
        tensor.data_type = dtype
        return f"dtype of initializer {tensor.name!r} -> {dtype}"
    values = list(graph.input) + list(graph.output)
    if values and rng.random() < 0.8:
        value = rng.choice(values)
        value.type.tensor_type.elem_type = dtype
        return f"dtype of {value.name!r} -> {dtype}"
    casts = [n for n in graph.node if n.op_type == "Cast"] or list(graph.node)
    if casts:
        node = rng.choice(casts)
        node.op_type = "Cast"
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("to", dtype))
        return f"Cast {node.name!r} to {dtype}"
    return "no dtype"


# --- initializers -----------------------------------------------------------------------


def mutate_initializer(case: Case, rng: random.Random) -> str:
    graph = _graph(case)
    if not graph.initializer:
        return "no initializer"
    tensor = rng.choice(list(graph.initializer))
    action = rng.randrange(6)
    if action == 0 and tensor.raw_data:
        tensor.raw_data = tensor.raw_data[: rng.randrange(len(tensor.raw_data) + 1)]
        return f"raw_data of {tensor.name!r} truncated"
    if action == 1:
        tensor.raw_data = tensor.raw_data + bytes(rng.choice([1, 4, 64]))
        return f"raw_data of {tensor.name!r} extended"
    if action == 2 and tensor.data_type == TensorProto.FLOAT:
        values = numpy_helper.to_array(tensor).copy()
        if values.size:
            values.reshape(-1)[rng.randrange(values.size)] = rng.choice(EXTREME_FLOATS)
            tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
        return f"extreme value in {tensor.name!r}"
    if action == 3:
        graph.initializer.remove(tensor)
        return f"deleted initializer {tensor.name!r}"
    if action == 4:
        copy = graph.initializer.add()
        copy.CopyFrom(tensor)
        copy.dims.append(2)
        return f"duplicate initializer {tensor.name!r}"
    tensor.ClearField("raw_data")
    tensor.float_data.extend([1.0] * rng.choice([0, 1, 3]))
    return f"raw_data of {tensor.name!r} moved to float_data"


# --- names -------------------------------------------------------------------------------


def mutate_name(case: Case, rng: random.Random) -> str:
    graph = _graph(case)
    bad = rng.choice(
        [
            "a\x00b",
            "\x00",
            "\x01BADUTF8A\x01",
            "\x01BADUTF8B\x01",
            "x" * 10000,
            "a.b.c",
            "",
            "ü/é.ñ",
        ]
    )
    target = rng.randrange(5)
    if target == 0 and graph.node:
        node = rng.choice(list(graph.node))
        node.name = bad
        return f"node name -> {bad[:20]!r}"
    if target == 1 and graph.node:
        node = rng.choice(list(graph.node))
        node.op_type = bad if rng.random() < 0.5 else node.op_type + bad
        return f"op type -> {node.op_type[:20]!r}"
    if target == 2:
        old = _input_name(case)
        for value in graph.input:
            if value.name == old:
                value.name = bad
        for node in graph.node:
            node.input[:] = [bad if n == old else n for n in node.input]
        return f"input renamed to {bad[:20]!r}"
    if target == 3 and graph.node:
        node = rng.choice(list(graph.node))
        if node.output:
            old = node.output[0]
            node.output[0] = bad
            for other in graph.node:
                other.input[:] = [bad if n == old else n for n in other.input]
            for out in graph.output:
                if out.name == old:
                    out.name = bad
        return f"tensor renamed to {bad[:20]!r}"
    if graph.node:
        node = rng.choice(list(graph.node))
        node.domain = bad
    return f"domain -> {bad[:20]!r}"


# --- opsets ------------------------------------------------------------------------------


def mutate_opset(case: Case, rng: random.Random) -> str:
    model = case.model
    action = rng.randrange(4)
    if action == 0:
        model.ir_version = rng.choice([0, 1, 3, 7, 8, 10, 11, 12, 100, 2**62])
        return f"ir_version -> {model.ir_version}"
    if action == 1 and model.opset_import:
        del model.opset_import[rng.randrange(len(model.opset_import))]
        return "opset entry deleted"
    if action == 2:
        model.opset_import.add(domain=rng.choice(["ai.onnx", "com.microsoft", "\x00"]), version=1)
        return "opset entry added"
    version = rng.choice([0, 1, 6, 7, 8, 9, 10, 11, 13, 17, 18, 21, 22, 23, 24, 30, 1000, 2**62])
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = version
    return f"opset -> {version}"


# --- external data, sparse tensors, subgraphs ---------------------------------------------

#: Locations an external tensor may claim; some refer to files the case creates.
LOCATIONS = [
    f"../{CANARY}", CANARY, f"/tmp/../{CANARY}", "", "a\x00b", "x" * 5000, "loop", "escape",
    "subdir", "fifo", "weights.bin", "/dev/zero", "/proc/self/mem", "./weights.bin", "..",
]  # fmt: skip


def _make_external(case: Case, tensor: TensorProto, rng: random.Random) -> str:
    raw = tensor.raw_data or numpy_helper.from_array(numpy_helper.to_array(tensor)).raw_data
    location = rng.choice(LOCATIONS)
    if location.endswith("weights.bin"):
        case.files["weights.bin"] = raw
    elif location == "loop":
        case.symlinks["loop"] = "loop"
    elif location == "escape":
        case.symlinks["escape"] = f"../{CANARY}"
    elif location == "subdir":
        case.files["subdir/placeholder"] = b""
    elif location == "fifo":
        case.fifos.append("fifo")
    tensor.ClearField("raw_data")
    for name in ("float_data", "int64_data", "int32_data", "double_data"):
        tensor.ClearField(name)
    tensor.data_location = TensorProto.EXTERNAL if rng.random() < 0.9 else TensorProto.DEFAULT
    tensor.external_data.add(key="location", value=location)
    if rng.random() < 0.5:
        offset = rng.choice(["abc", "0x10", "", "-5", "0", "4", str(2**63), " 1"])
        tensor.external_data.add(key="offset", value=offset)
    if rng.random() < 0.5:
        length = rng.choice(["1e15", "-5", "", str(len(raw)), str(len(raw) + 1), "abc"])
        tensor.external_data.add(key="length", value=length)
    if rng.random() < 0.1:
        tensor.external_data.add(key="location", value=CANARY)
    return f"external {location[:30]!r}"


def external_data(case: Case, rng: random.Random) -> str:
    graph = _graph(case)
    if graph.initializer and rng.random() < 0.7:
        return "initializer " + _make_external(case, rng.choice(list(graph.initializer)), rng)
    value = numpy_helper.from_array(np.ones(1, np.float32))
    text = _make_external(case, value, rng)
    node = helper.make_node("Constant", [], ["ext_const"], name="ext_const_node", value=value)
    graph.node.insert(0, node)
    return "Constant attribute " + text


def sparse_initializer(case: Case, rng: random.Random) -> str:
    graph = _graph(case)
    size = rng.choice([4, 16])
    values = numpy_helper.from_array(np.ones(2, np.float32), "sparse_w")
    indices = numpy_helper.from_array(np.array([0, rng.choice([1, size, -1, 2**40])], np.int64))
    sparse = onnx.SparseTensorProto(values=values, indices=indices, dims=[size])
    text = "inline"
    if rng.random() < 0.6:
        text = _make_external(case, sparse.values if rng.random() < 0.7 else sparse.indices, rng)
    if graph.initializer and rng.random() < 0.5:
        victim = rng.choice(list(graph.initializer))
        sparse.values.name = victim.name
        graph.initializer.remove(victim)
    graph.sparse_initializer.append(sparse)
    return f"sparse initializer ({text})"


def subgraph_tensor(case: Case, rng: random.Random) -> str:
    """An If node whose branches hold a tensor (external, or an initializer)."""
    graph = _graph(case)
    value = numpy_helper.from_array(np.ones(1, np.float32), "branch_w")
    text = _make_external(case, value, rng) if rng.random() < 0.8 else "inline"
    branch = helper.make_graph(
        [helper.make_node("Identity", ["branch_w"], ["branch_out"], name="branch_id")],
        "branch",
        [],
        [helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, [1])],
        [value],
    )
    cond = numpy_helper.from_array(np.array(True), "cond")
    graph.initializer.append(cond)
    node = helper.make_node(
        "If", ["cond"], ["if_out"], name="if_node", then_branch=branch, else_branch=branch
    )
    graph.node.insert(0, node)
    return f"subgraph tensor ({text})"


FAMILIES: dict[str, list[Mutator]] = {
    "bytes": [flip_bytes, truncate_bytes, splice_bytes],
    "ops": [change_op, rewire, insert_hostile_node],
    "attributes": [mutate_attribute, attribute_on_padded_op],
    "dims": [mutate_dims],
    "dtypes": [mutate_dtype],
    "initializers": [mutate_initializer],
    "names": [mutate_name],
    "opsets": [mutate_opset],
    "external": [external_data, subgraph_tensor],
    "sparse": [sparse_initializer],
}


def mutate(case: Case, family: str, rng: random.Random) -> None:
    """Apply one mutator of ``family`` and, sometimes, one or two of any protobuf family."""
    extra = [f for f in FAMILIES if f != "bytes"]
    plan = [family] + [rng.choice(extra) for _ in range(rng.choice([0, 0, 1, 2]))]
    if family == "bytes":
        plan = plan[1:] + ["bytes"]  # bytes last: protobuf mutators need the proto
    for name in plan:
        mutator = rng.choice(FAMILIES[name])
        try:
            step = mutator(case, rng)
        except Exception as exc:  # noqa: BLE001 - a mutator that cannot apply gives up
            step = f"{mutator.__name__} skipped ({type(exc).__name__})"
        case.steps.append(f"{name}: {step}")
