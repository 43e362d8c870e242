"""Which input activation maximization optimizes: name, shape, dtype and layout."""

from __future__ import annotations

import re
from dataclasses import dataclass

import onnx

from onnx_am.errors import InputSpecError

FLOAT_TYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
}

#: Refuse inputs whose single sample would need more than this many elements (256 MiB in
#: fp32): activation maximization holds a batch of them, plus gradients and optimizer state.
MAX_SAMPLE_ELEMENTS = 2**26

Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    """An ONNX graph input or output: symbolic dims are strings (``"?"`` when unnamed)."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class InputSpec(TensorSpec):
    """The input to optimize.

    Attributes:
        sample_shape: the concrete shape of one sample (batch dim dropped).
        layout: ``"NCHW"``, ``"NHWC"``, ``"vector"`` (N x D) or ``"other"``.
    """

    sample_shape: tuple[int, ...] = ()
    layout: str = "other"

    @property
    def channels(self) -> int | None:
        """Number of colour channels for image layouts."""
        if self.layout == "NCHW":
            return self.sample_shape[0]
        if self.layout == "NHWC":
            return self.sample_shape[-1]
        return None

    def to_dict(self) -> dict:
        return {**super().to_dict(), "sample_shape": list(self.sample_shape), "layout": self.layout}


def describe_value(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor_type = value.type.tensor_type
    dims: list[Dim] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or "?")
    dtype = (
        onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        if tensor_type.elem_type
        else "?"
    )
    return TensorSpec(value.name, tuple(dims), dtype)


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are real inputs (not initializers listed as inputs)."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def describe_outputs(model: onnx.ModelProto) -> list[TensorSpec]:
    return [describe_value(value) for value in model.graph.output]


def choose_input(
    model: onnx.ModelProto,
    input_name: str | None = None,
    input_shape: tuple[int, ...] | list[int] | None = None,
    image_size: tuple[int, int] | None = None,
) -> InputSpec:
    """Pick the float input to optimize and make its shape concrete.

    The other inputs are fed fixed values (:mod:`onnx_am.importer.feeds`).

    Args:
        model: the model as loaded.
        input_name: the input to optimize (required when there are several float inputs).
        input_shape: its full shape, filling symbolic dims.
        image_size: ``(height, width)`` recorded by the producer; fills symbolic height and
            width of an image input (4 dims, 1-4 channels) when ``input_shape`` is not given.

    Raises:
        InputSpecError: no float input, several without ``input_name``, unknown name,
            unfilled symbolic dims, a shape that does not fit, or a sample too large.
    """
    candidates = graph_inputs(model)
    value = _pick(candidates, input_name)
    spec = describe_value(value)
    if input_shape is None and image_size is not None:
        input_shape = image_shape(spec, image_size)
    sample_shape = _sample_shape(spec, input_shape)
    return InputSpec(
        spec.name, spec.shape, spec.dtype, sample_shape, _layout(model, spec.name, sample_shape)
    )


def _pick(candidates: list[onnx.ValueInfoProto], input_name: str | None) -> onnx.ValueInfoProto:
    described = ", ".join(_described(describe_value(v)) for v in candidates) or "none"
    if input_name is not None:
        for value in candidates:
            if value.name == input_name:
                if value.type.tensor_type.elem_type not in FLOAT_TYPES:
                    raise InputSpecError(
                        f"input {input_name!r} is not a float tensor; inputs: {described}"
                    )
                return value
        raise InputSpecError(f"no input named {input_name!r}; inputs: {described}")
    floats = [v for v in candidates if v.type.tensor_type.elem_type in FLOAT_TYPES]
    if not floats:
        raise InputSpecError(f"model has no float input to optimize; inputs: {described}")
    if len(floats) > 1:
        raise InputSpecError(
            f"model has several float inputs; choose the one to optimize with --input NAME "
            f"(the others are held at zeros or at --feed NAME=VALUE): {described}"
        )
    return floats[0]


def image_shape(spec: TensorSpec, image_size: tuple[int, int]) -> tuple[int, ...] | None:
    """The full shape of an image input with symbolic height and width set to ``image_size``.

    ``None`` unless the input has 4 dims, a known channel count of 1-4 (axis 1 or 3), and
    only symbolic dims besides (the batch becomes 1).
    """
    if len(spec.shape) != 4:
        return None
    batch, *rest = spec.shape
    height, width = image_size
    for channel_axis, spatial in ((0, (1, 2)), (2, (0, 1))):
        channels = rest[channel_axis]
        if not (isinstance(channels, int) and 1 <= channels <= 4):
            continue
        if not all(isinstance(rest[axis], str) for axis in spatial):
            continue
        shape = [1, *rest]
        shape[1 + spatial[0]], shape[1 + spatial[1]] = height, width
        return tuple(int(d) for d in shape)
    return None


def _described(spec: TensorSpec) -> str:
    return f"{spec.name} ({spec.dtype} [{', '.join(str(d) for d in spec.shape)}])"


def _sample_shape(spec: TensorSpec, input_shape) -> tuple[int, ...]:
    if not spec.shape:
        raise InputSpecError(f"input {spec.name!r} has no declared shape; pass --input-shape")
    if input_shape is not None:
        shape = tuple(int(d) for d in input_shape)
        if len(shape) != len(spec.shape):
            raise InputSpecError(
                f"--input-shape {list(shape)} has {len(shape)} dims, input {spec.name!r} has "
                f"{len(spec.shape)}: {list(spec.shape)}"
            )
        for given, declared in zip(shape[1:], spec.shape[1:], strict=True):
            if given <= 0 or (isinstance(declared, int) and declared != given):
                raise InputSpecError(
                    f"--input-shape {list(shape)} does not fit input {spec.name!r} "
                    f"{list(spec.shape)}"
                )
    else:
        symbolic = [d for d in spec.shape[1:] if isinstance(d, str)]
        if symbolic:
            raise InputSpecError(
                f"input {spec.name!r} has symbolic dims {symbolic} in {list(spec.shape)}; "
                "fill them with --input-shape"
            )
        shape = (1, *spec.shape[1:])
    sample = tuple(int(d) for d in shape[1:])
    elements = 1
    for dim in sample:
        elements *= dim
    if elements > MAX_SAMPLE_ELEMENTS:
        raise InputSpecError(
            f"input {spec.name!r} of shape {list(sample)} has {elements} elements per sample, "
            f"more than the {MAX_SAMPLE_ELEMENTS} onnx-am will allocate"
        )
    return sample


def _layout(model: onnx.ModelProto, name: str, sample: tuple[int, ...]) -> str:
    if len(sample) == 1:
        return "vector"
    if len(sample) != 3:
        return "other"
    for node in model.graph.node:
        if node.op_type == "Transpose" and name in node.input:
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [])
            if perm == [0, 3, 1, 2]:
                return "NHWC"
    channels_first, channels_last = sample[0] in (1, 3, 4), sample[2] in (1, 3, 4)
    if channels_last and not channels_first:
        return "NHWC"
    return "NCHW"


_SHAPE_RE = re.compile(r"[0-9]+(?:(?:\s*[,xX]\s*|\s+)[0-9]+)*")


def parse_shape(text: str, min_dim: int = 1) -> tuple[int, ...] | None:
    """The one shape grammar of onnx-am: ``1,3,32,32``, ``1x3x32x32`` or ``1 3 32 32``.

    Args:
        text: the shape as typed.
        min_dim: the smallest size a dim may have (0 for fed tensors that may be empty).

    Returns:
        The dims, or ``None`` when ``text`` is not a shape (the caller raises its own error,
        naming the option or feed it came from).
    """
    text = text.strip()
    if not _SHAPE_RE.fullmatch(text):
        return None
    dims = tuple(int(d) for d in re.findall(r"[0-9]+", text))
    return dims if min(dims) >= min_dim else None
