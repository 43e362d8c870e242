"""Range checks on the attributes and constant inputs that onnx-am reads or that size tensors.

The SAME-padding and asymmetric-pool pre-passes read ``kernel_shape``/``strides``/
``dilations``/``pads``; the rectifier rules and inspection read ``alpha``/``min``/``max``;
``axis``/``axes``/``perm`` and constant shape inputs (Slice axes, Pad pads, Tile repeats,
Reshape and Expand shapes, Resize scales) decide how much torch and onnxruntime allocate.
Each is checked for length and range here, with the node's name in the error. (Types were
checked against the op schema before.)
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper

from onnx_am.errors import ModelLoadError, ResourceLimitError
from onnx_am.importer.limits import MAX_RANK, check_elements

#: Largest kernel, stride, dilation, pad or single dim a model may state.
MAX_DIM = 2**24
#: Largest Resize / Upsample scale factor.
MAX_SCALE = 1024.0

WINDOW_OPS = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool")
AUTO_PAD = (b"NOTSET", b"SAME_UPPER", b"SAME_LOWER", b"VALID")

#: op type -> {input index: (what, low, high)} for constant integer inputs.
CONSTANT_INPUTS = {
    "Slice": {3: ("axes", -MAX_RANK, MAX_RANK - 1), 4: ("steps", -MAX_DIM, MAX_DIM)},
    "Squeeze": {1: ("axes", -MAX_RANK, MAX_RANK - 1)},
    "Unsqueeze": {1: ("axes", -MAX_RANK, MAX_RANK - 1)},
    "Pad": {1: ("pads", -MAX_DIM, MAX_DIM), 3: ("axes", -MAX_RANK, MAX_RANK - 1)},
    "Tile": {1: ("repeats", 0, MAX_DIM)},
    "Expand": {1: ("shape", 0, MAX_DIM)},
    "Reshape": {1: ("shape", -1, MAX_DIM)},
    "ConstantOfShape": {0: ("shape", 0, MAX_DIM)},
    "Resize": {3: ("sizes", 0, MAX_DIM)},
    "Split": {1: ("split", 0, MAX_DIM)},
    "TopK": {1: ("k", 0, MAX_DIM)},
    "OneHot": {1: ("depth", 0, MAX_DIM)},
    "Range": {},
}
for _op in (
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
):  # fmt: skip
    CONSTANT_INPUTS[_op] = {1: ("axes", -MAX_RANK, MAX_RANK - 1)}


def check_node_values(
    node: onnx.NodeProto, label: str, constants: dict[str, onnx.TensorProto]
) -> None:
    """Check the attributes and constant inputs of one node (see the module docstring)."""
    attrs = {a.name: a for a in node.attribute}
    if node.op_type in WINDOW_OPS:
        _check_window(attrs, label)
    for name in ("axis",):
        if name in attrs and attrs[name].type == onnx.AttributeProto.INT:
            _within(name, [attrs[name].i], -MAX_RANK, MAX_RANK - 1, label)
    if "axes" in attrs and attrs["axes"].type == onnx.AttributeProto.INTS:
        _within("axes", list(attrs["axes"].ints), -MAX_RANK, MAX_RANK - 1, label)
    if "perm" in attrs and node.op_type == "Transpose":
        perm = list(attrs["perm"].ints)
        if sorted(perm) != list(range(len(perm))) or len(perm) > MAX_RANK:
            raise ModelLoadError(f"perm {perm[:8]} of {label} is not a permutation")
    for name in ("alpha", "beta", "min", "max", "epsilon"):
        if name in attrs and attrs[name].type == onnx.AttributeProto.FLOAT:
            if math.isnan(attrs[name].f):
                raise ModelLoadError(f"attribute {name!r} of {label} is NaN")
    if node.op_type == "Constant":
        _check_constant(node, attrs, label)
    if node.op_type == "ConstantOfShape" and "value" in attrs:
        if math.prod(attrs["value"].t.dims) != 1:
            raise ModelLoadError(f"value of {label} must hold exactly one element")
    if node.op_type == "Cast" and "to" in attrs:
        if attrs["to"].i not in onnx.TensorProto.DataType.values() or attrs["to"].i == 0:
            raise ModelLoadError(f"{label} casts to unknown dtype {attrs['to'].i}")
    if node.op_type in ("Resize", "Upsample"):
        _check_scales(node, constants, label)
    for index, (what, low, high) in CONSTANT_INPUTS.get(node.op_type, {}).items():
        if index < len(node.input) and node.input[index] in constants:
            values = _integers(constants[node.input[index]])
            if values is not None:
                _within(what, values, low, high, label)
                if node.op_type == "Pad" and what == "pads":
                    _check_padded_size(values, label)


def _check_padded_size(pads: list[int], label: str) -> None:
    """Pads alone (whatever the input) must not ask for a tensor above the element limit:
    shape inference cannot bound a Pad whose pads do not fit the input's rank."""
    half = len(pads) // 2
    grown = 1.0
    for begin, end in zip(pads[:half], pads[half : 2 * half], strict=True):
        grown *= 1 + max(begin, 0) + max(end, 0)
    check_elements(grown, f"the output of {label}")


def _check_window(attrs: dict[str, onnx.AttributeProto], label: str) -> None:
    if "auto_pad" in attrs and attrs["auto_pad"].s not in AUTO_PAD:
        raise ModelLoadError(
            f"auto_pad {attrs['auto_pad'].s[:20]!r} of {label} is not one of "
            "NOTSET, SAME_UPPER, SAME_LOWER, VALID"
        )
    ranks = {}
    for name, factor, low, high in (
        ("kernel_shape", 1, 1, MAX_DIM),
        ("strides", 1, 1, MAX_DIM),
        ("dilations", 1, 1, MAX_DIM),
        ("pads", 2, 0, MAX_DIM),
        ("output_padding", 1, 0, MAX_DIM),
    ):
        if name in attrs:
            values = list(attrs[name].ints)
            if not values or len(values) % factor or len(values) // factor > 3:
                raise ModelLoadError(f"{name} {values[:8]} of {label} has a wrong length")
            _within(name, values, low, high, label)
            ranks[name] = len(values) // factor
    if len(set(ranks.values())) > 1:
        stated = ", ".join(f"{name} {rank}" for name, rank in ranks.items())
        raise ModelLoadError(f"{label} states different spatial ranks: {stated}")
    for name in ("ceil_mode", "count_include_pad"):
        if name in attrs and attrs[name].i not in (0, 1):
            raise ModelLoadError(f"{name} of {label} must be 0 or 1, not {attrs[name].i}")


def _check_constant(node: onnx.NodeProto, attrs: dict, label: str) -> None:
    values = [name for name in attrs if name.startswith("value") or name == "sparse_value"]
    if len(values) != 1 or len(node.output) != 1:
        raise ModelLoadError(
            f"{label} needs exactly one value attribute and one output "
            f"(has {len(values)} and {len(node.output)})"
        )


def _check_scales(node: onnx.NodeProto, constants: dict, label: str) -> None:
    index = 2 if node.op_type == "Resize" else 1
    if index < len(node.input) and node.input[index] in constants:
        try:
            scales = numpy_helper.to_array(constants[node.input[index]]).astype(np.float64)
        except (ValueError, TypeError):
            return
        if scales.size and not (np.isfinite(scales).all() and (scales <= MAX_SCALE).all()):
            raise ResourceLimitError(
                f"scales {scales.reshape(-1)[:8].tolist()} of {label} exceed {MAX_SCALE:g}"
            )


def _integers(tensor: onnx.TensorProto) -> list[int] | None:
    if tensor.data_type not in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
        return None
    try:
        return numpy_helper.to_array(tensor).astype(np.int64).reshape(-1).tolist()
    except (ValueError, TypeError):
        return None


def _within(what: str, values: list[int], low: int, high: int, label: str) -> None:
    bad = [v for v in values if not low <= v <= high]
    if bad:
        error = ResourceLimitError if max(abs(v) for v in bad) > MAX_RANK else ModelLoadError
        raise error(f"{what} {bad[:4]} of {label} outside [{low}, {high}]")
