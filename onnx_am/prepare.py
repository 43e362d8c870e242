"""ONNX-side pre-passes that make a model convertible without changing what it computes.

Each pass takes a model and returns ``(model, notes)``; :func:`prepare_model` works on a copy,
so the original is never modified. Parity with onnxruntime on the *original* model checks
that the passes were sound. What needs a torch module rather than a graph edit lives in
:mod:`onnx_am.converters`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper, version_converter

from onnx_am.errors import ModelLoadError
from onnx_am.input_spec import InputSpec

#: Models below this default-domain opset are upgraded first (onnx2torch covers 11+ best).
MIN_OPSET = 11
UPGRADE_TO = 13
#: Largest tensor a shape-producing node with constant shape may create (elements).
MAX_CONSTANT_ELEMENTS = 2**28
#: ConstantOfShape nodes up to this many elements are folded into initializers.
MAX_FOLDED_ELEMENTS = 2**24

Prepass = Callable[[onnx.ModelProto], tuple[onnx.ModelProto, list[str]]]


def prepare_model(
    model: onnx.ModelProto, spec: InputSpec | None = None
) -> tuple[onnx.ModelProto, list[str]]:
    """Run all pre-passes on a copy of ``model``.

    Args:
        model: the model as loaded.
        spec: the chosen input; with it, ``auto_pad`` is made explicit from inferred shapes.

    Returns:
        The prepared copy and one note per change.

    Raises:
        ModelLoadError: a node would create a tensor too large to allocate.
    """
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    notes: list[str] = []
    passes: list[Prepass] = [
        normalize_domains,
        name_nodes,
        refuse_huge_constants,
        upgrade_opset,
        constants_to_initializers,
        fold_initializer_identities,
        drop_needless_allowzero,
    ]
    if spec is not None:
        passes += [
            lambda m: explicit_auto_pad(m, spec),
            lambda m: split_asymmetric_average_pools(m, spec),
        ]
    for prepass in passes:
        prepared, new_notes = prepass(prepared)
        notes.extend(new_notes)
    return prepared, notes


def normalize_domains(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Spell the default domain ``""`` everywhere (some producers write ``"ai.onnx"``)."""
    changed = 0
    for node in model.graph.node:
        if node.domain == "ai.onnx":
            node.domain = ""
            changed += 1
    for entry in model.opset_import:
        if entry.domain == "ai.onnx":
            entry.domain = ""
            changed += 1
    return model, [f"renamed domain 'ai.onnx' to '' in {changed} place(s)"] if changed else []


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
    """The opset version of the default ONNX domain (0 when not declared)."""
    return next(
        (entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0
    )


def refuse_huge_constants(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Refuse ``ConstantOfShape``/``Expand`` nodes whose constant shape is absurdly large.

    Such a node (``ConstantOfShape`` of 10^12 elements) would exhaust memory at the first
    run, in torch and in onnxruntime alike; better to say so before anything runs.
    """
    constants = _constant_arrays(model)
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


def _constant_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
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
    note = f"moved {moved} Constant/ConstantOfShape node(s) to initializers"
    return model, [note] if moved else []


def fold_initializer_identities(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Replace ``Identity(initializer)`` by a copy of the initializer under the output name.

    The legacy torch exporter deduplicates equal weights (often the zero biases of folded
    BatchNorms) and feeds the copies through Identity nodes; onnx2torch needs Conv/Gemm
    weights to be initializers.
    """
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    kept, folded = [], 0
    for node in graph.node:
        source = constants.get(node.input[0]) if node.op_type == "Identity" and node.input else None
        if source is None:
            kept.append(node)
            continue
        copy = onnx.TensorProto()
        copy.CopyFrom(source)
        copy.name = node.output[0]
        graph.initializer.append(copy)
        constants[copy.name] = copy
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(kept)
    return model, [f"folded {folded} Identity node(s) of initializers"] if folded else []


def drop_needless_allowzero(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Clear ``allowzero=1`` on Reshapes whose constant shape has no zero (it changes nothing).

    The dynamo exporter sets ``allowzero=1`` everywhere; onnx2torch refuses it.
    """
    constants = _constant_arrays(model)
    changed = 0
    for node in model.graph.node:
        allowzero = next((a for a in node.attribute if a.name == "allowzero"), None)
        if node.op_type != "Reshape" or allowzero is None or allowzero.i == 0:
            continue
        shape = constants.get(node.input[1]) if len(node.input) > 1 else None
        if shape is not None and not (shape == 0).any():
            allowzero.i = 0
            changed += 1
    return model, [
        f"cleared allowzero on {changed} Reshape(s) without zero dims"
    ] if changed else []


def _constant_value(
    node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]
) -> onnx.TensorProto | None:
    if node.op_type == "Constant" and node.domain == "":
        return _constant_attribute(node)
    if node.op_type == "ConstantOfShape" and node.input and node.input[0] in constants:
        shape = numpy_helper.to_array(constants[node.input[0]]).astype("int64").reshape(-1)
        if shape.size and int(np.prod(shape.astype(np.float64))) > MAX_FOLDED_ELEMENTS:
            return None
        attribute = next((a for a in node.attribute if a.name == "value"), None)
        value = numpy_helper.to_array(attribute.t) if attribute else np.zeros(1, np.float32)
        return numpy_helper.from_array(np.full(shape.tolist(), value.reshape(-1)[0], value.dtype))
    return None


def _constant_attribute(node: onnx.NodeProto) -> onnx.TensorProto | None:
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


#: Ops whose ``auto_pad`` this module makes explicit.
AUTO_PAD_OPS = ("Conv", "MaxPool", "AveragePool", "LpPool")


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


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _set_attribute(node: onnx.NodeProto, name: str, value) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    if value is not None:
        node.attribute.append(onnx.helper.make_attribute(name, value))


def same_pads(size: list[int], kernel, strides, dilations, mode: bytes | str) -> list[int]:
    """ONNX ``pads`` (begins then ends) equivalent to ``auto_pad`` SAME_UPPER/SAME_LOWER."""
    begins, ends = [], []
    for i, n in enumerate(size):
        out = -(-n // strides[i])
        total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - n, 0)
        small, large = total // 2, total - total // 2
        upper = mode in (b"SAME_UPPER", "SAME_UPPER")
        begins.append(small if upper else large)
        ends.append(large if upper else small)
    return begins + ends


def explicit_auto_pad(model: onnx.ModelProto, spec: InputSpec) -> tuple[onnx.ModelProto, list[str]]:
    """Replace ``auto_pad`` SAME_UPPER/SAME_LOWER/VALID by explicit ``pads``.

    tf2onnx and Keras exports use ``auto_pad``; onnx2torch does not support SAME. The pads
    depend on the input's spatial size, which is fixed for activation maximization.
    """
    todo = [
        n
        for n in model.graph.node
        if n.op_type in AUTO_PAD_OPS and _attributes(n).get("auto_pad", b"NOTSET") != b"NOTSET"
    ]
    if not todo:
        return model, []
    shapes = infer_shapes(model, spec)
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    changed = 0
    for node in todo:
        attrs = _attributes(node)
        size = shapes.get(node.input[0])
        kernel = (
            attrs.get("kernel_shape")
            or weights.get(node.input[1] if len(node.input) > 1 else "", [])[2:]
        )
        if size is None or not kernel:
            continue
        rank = len(kernel)
        if attrs["auto_pad"] == b"VALID":
            pads = [0] * 2 * rank
        else:
            strides = attrs.get("strides", [1] * rank)
            dilations = attrs.get("dilations", [1] * rank)
            pads = same_pads(size[2:], kernel, strides, dilations, attrs["auto_pad"])
        _set_attribute(node, "auto_pad", None)
        _set_attribute(node, "pads", pads)
        changed += 1
    return model, [f"made auto_pad explicit on {changed} node(s)"] if changed else []


def split_asymmetric_average_pools(
    model: onnx.ModelProto, spec: InputSpec
) -> tuple[onnx.ModelProto, list[str]]:
    """Rewrite AveragePool with asymmetric pads as Pad -> AveragePool (-> Mul).

    torch pools pad symmetrically only. The pad is made explicit with zeros; when padding is
    not counted (``count_include_pad=0``, TensorFlow's SAME) a constant per-position factor
    ``kernel area / valid count`` restores the average over valid inputs only.
    """
    targets = {n.name for n in model.graph.node if _is_asymmetric_pool(n)}
    if not targets:
        return model, []
    shapes = infer_shapes(model, spec)
    new_nodes, changed = [], 0
    for node in model.graph.node:
        size = shapes.get(node.input[0]) if node.name in targets else None
        if size is None:
            new_nodes.append(node)
            continue
        new_nodes.extend(_split_pool(model, node, size))
        changed += 1
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return model, [
        f"split {changed} asymmetric AveragePool(s) into Pad + AveragePool"
    ] if changed else []


def _is_asymmetric_pool(node: onnx.NodeProto) -> bool:
    attrs = _attributes(node)
    pads = list(attrs.get("pads", []))
    return (
        node.op_type == "AveragePool"
        and not attrs.get("ceil_mode", 0)
        and pads[: len(pads) // 2] != pads[len(pads) // 2 :]
    )


def _split_pool(
    model: onnx.ModelProto, node: onnx.NodeProto, size: list[int]
) -> list[onnx.NodeProto]:
    attrs = _attributes(node)
    pads, name, out = list(attrs["pads"]), node.name, node.output[0]
    rank = len(pads) // 2
    full = [0, 0, *pads[:rank], 0, 0, *pads[rank:]]
    model.graph.initializer.append(
        numpy_helper.from_array(np.array(full, np.int64), f"{name}/pads")
    )
    pad = onnx.helper.make_node(
        "Pad", [node.input[0], f"{name}/pads"], [f"{out}/padded"], f"{name}/pad"
    )
    include = bool(attrs.get("count_include_pad", 0))
    pool = onnx.NodeProto()
    pool.CopyFrom(node)
    del pool.input[:]
    pool.input.append(f"{out}/padded")
    _set_attribute(pool, "pads", None)
    _set_attribute(pool, "count_include_pad", 1)
    if include:
        return [pad, pool]
    pool.name, pool.output[0] = f"{name}/sum", f"{out}/unscaled"
    scale = _valid_fraction(size[2:], attrs, pads)
    model.graph.initializer.append(numpy_helper.from_array(scale, f"{name}/scale"))
    mul = onnx.helper.make_node("Mul", [f"{out}/unscaled", f"{name}/scale"], [out], name)
    return [pad, pool, mul]


def _valid_fraction(size: list[int], attrs: dict, pads: list[int]) -> np.ndarray:
    """``1 / (fraction of each window that lies inside the unpadded input)``, as [1,1,*out]."""
    rank = len(size)
    ones = torch.ones((1, 1, *size), dtype=torch.float64)
    torch_pads = []
    for d in reversed(range(rank)):
        torch_pads += [pads[d], pads[rank + d]]
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank]
    strides = attrs.get("strides", [1] * rank)
    fraction = pool(F.pad(ones, torch_pads), list(attrs["kernel_shape"]), list(strides))
    return (1.0 / fraction).numpy().astype(np.float32)
