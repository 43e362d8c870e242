"""Values for the inputs that are not optimized: a recurrent ``state``, a sample rate ``sr``.

Activation maximization optimizes one input; every other graph input is held at a fixed
value. The user gives it as ``--feed NAME=VALUE`` on the command line or ``feeds={...}`` in
the Python API:

- a number, broadcast to the input's declared shape (``sr=16000``, ``state=0``);
- a number and a shape, for inputs whose declared shape has unnamed dims
  (``state=0:2,1,128``; the shape grammar of ``--input-shape``);
- a ``.npy`` file (read with ``allow_pickle=False``) or, in Python, an array.

Float inputs without a value are fed zeros when their shape is known. A symbolic dim shared
by name with the optimized input takes that input's size (its batch dim: 1, one row at a
time). Anything else raises :class:`~onnx_am.errors.InputSpecError` naming the input and
what to pass. Parsing happens once, here: :func:`parse_feed` turns text into a
:class:`FeedValue`; :func:`resolve_feeds` turns those into arrays of the declared dtype.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnx_am.errors import InputSpecError
from onnx_am.importer.input_spec import (
    InputSpec,
    TensorSpec,
    describe_value,
    graph_inputs,
    parse_shape,
)

#: A fed input may hold at most this many elements (the optimized input has its own cap).
MAX_FEED_ELEMENTS = 2**26


@dataclass(frozen=True)
class FeedValue:
    """What the user gave for one input, parsed but not yet fitted to the model.

    Exactly one of ``scalar``, ``array`` and ``path`` is set.

    Attributes:
        name: the input's ONNX name.
        scalar: a number to broadcast; ``shape`` then optionally gives the full shape.
        shape: the full shape for ``scalar`` (``None``: the declared shape).
        array: a given array, used as is (cast to the input's dtype).
        path: a ``.npy`` file to load.
    """

    name: str
    scalar: float | int | bool | None = None
    shape: tuple[int, ...] | None = None
    array: np.ndarray | None = None
    path: Path | None = None

    @property
    def label(self) -> str:
        """How the value was given, for reports: ``16000``, ``0 as [2, 1, 128]``, ``file x.npy``."""
        if self.path is not None:
            return f"file {self.path.name}"
        if self.array is not None:
            return f"array {list(self.array.shape)}"
        text = _number_text(self.scalar)
        return text if self.shape is None else f"{text} as {list(self.shape)}"


@dataclass(frozen=True)
class Feed:
    """The value an input other than the optimized one is held at.

    Attributes:
        spec: the input as declared (name, shape with symbolic dims, dtype).
        value: the array fed for one row (a batch of one where the input has a batch dim).
        source: how the value was given: ``"16000"``, ``"file state.npy"``, ``"zeros (default)"``.
        batch_axis: the axis tied to the optimized input's batch dim (same symbolic name),
            along which a batch of rows repeats the value; ``None`` when not tied.
    """

    spec: TensorSpec
    value: np.ndarray
    source: str
    batch_axis: int | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def batch(self, rows: int) -> np.ndarray:
        """The value for a batch of ``rows`` rows (repeated along the batch axis)."""
        if self.batch_axis is None or rows == self.value.shape[self.batch_axis]:
            return self.value
        return np.repeat(self.value, rows, axis=self.batch_axis)

    @property
    def fingerprint(self) -> str:
        """``source`` plus a hash of the value: a resumed report must be fed the same."""
        digest = hashlib.sha256(self.value.tobytes()).hexdigest()[:16]
        return f"{self.source} {self.value.dtype}{list(self.value.shape)} sha256:{digest}"

    def to_dict(self) -> dict:
        return {
            **self.spec.to_dict(),
            "fed": self.source,
            "fed_shape": list(self.value.shape),
            "batch_axis": self.batch_axis,
        }


FeedInput = float | int | bool | str | os.PathLike | np.ndarray | FeedValue


def parse_feed(text: str) -> FeedValue:
    """Parse ``NAME=VALUE`` as typed after ``--feed``.

    Raises:
        InputSpecError: no ``=``, an empty name, or a value that is neither a number, a
            number with a shape, nor a ``.npy`` path.
    """
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise InputSpecError(
            f"cannot parse --feed {text!r}; write NAME=VALUE, e.g. sr=16000, state=0, "
            "state=0:2,1,128 or state=state.npy"
        )
    return parse_value(name.strip(), value.strip())


def parse_value(name: str, value: FeedInput) -> FeedValue:
    """One input's value from the Python API or the text after ``NAME=``.

    Args:
        name: the input's ONNX name.
        value: a number, an array, a :class:`FeedValue`, a path to a ``.npy`` file, or the
            text forms ``"16000"``, ``"0:2,1,128"``, ``"state.npy"``.

    Raises:
        InputSpecError: a value of another kind, or text that is none of the forms.
    """
    if isinstance(value, FeedValue):
        return value
    if isinstance(value, bool | int | float | np.number | np.bool_):
        return FeedValue(name, scalar=value.item() if isinstance(value, np.generic) else value)
    if isinstance(value, np.ndarray):
        return FeedValue(name, array=value)
    if isinstance(value, os.PathLike):
        return FeedValue(name, path=Path(value))
    if not isinstance(value, str):
        raise InputSpecError(
            f"feed for input {name!r} is a {type(value).__name__}; give a number, an array "
            "or a .npy path"
        )
    number, _, shape = value.partition(":")
    scalar = _number(number)
    if scalar is not None:
        return FeedValue(name, scalar=scalar, shape=_shape(shape, name, value) if shape else None)
    if value.lower().endswith(".npy"):
        return FeedValue(name, path=Path(value))
    raise InputSpecError(
        f"feed {name}={value} is neither a number (16000, 0.5, 0:2,1,128) nor a .npy file"
    )


def _number(text: str) -> float | int | bool | None:
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _number_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _shape(text: str, name: str, value: str) -> tuple[int, ...]:
    shape = parse_shape(text, min_dim=0)  # the grammar of --input-shape; empty dims allowed
    if shape is None:
        raise InputSpecError(
            f"cannot parse the shape in feed {name}={value}; write it like 0:2,1,128"
        )
    return shape


def resolve_feeds(
    model: onnx.ModelProto, chosen: InputSpec, given: Mapping[str, FeedValue] | None = None
) -> dict[str, Feed]:
    """A value for every graph input other than ``chosen``, in graph order.

    Args:
        model: the model as loaded.
        chosen: the optimized input.
        given: parsed user values by input name.

    Returns:
        Input name -> :class:`Feed`.

    Raises:
        InputSpecError: a value for an unknown input or for the optimized one, a value that
            does not fit the declared dtype or shape, an unreadable file, or an input that
            needs a value (not float, or a shape that cannot be resolved).
    """
    given = dict(given or {})
    inputs = {value.name: describe_value(value) for value in graph_inputs(model)}
    if chosen.name in given:
        raise InputSpecError(
            f"input {chosen.name!r} is the optimized input and cannot also be fed; pick another "
            "with --input NAME"
        )
    unknown = [name for name in given if name not in inputs]
    if unknown:
        listing = ", ".join(f"{n} ({s.dtype})" for n, s in inputs.items())
        raise InputSpecError(f"a feed names no input {unknown[0]!r}; inputs: {listing}")
    dims = _chosen_dims(chosen)
    feeds = {}
    for name, spec in inputs.items():
        if name == chosen.name:
            continue
        batch_axis = _batch_axis(spec, chosen)
        if name in given:
            value = given[name]
            array = _fit(spec, value, dims)
            feeds[name] = Feed(spec, array, value.label, batch_axis)
        else:
            feeds[name] = Feed(spec, _default(spec, dims), "zeros (default)", batch_axis)
    return feeds


def _chosen_dims(chosen: InputSpec) -> dict[str, int]:
    """Symbolic dim name of the optimized input -> the size a fed input takes for it."""
    sizes = (1, *chosen.sample_shape)
    return {
        dim: size
        for dim, size in zip(chosen.shape, sizes, strict=False)
        if isinstance(dim, str) and dim not in ("", "?")
    }


def _batch_axis(spec: TensorSpec, chosen: InputSpec) -> int | None:
    batch = chosen.shape[0] if chosen.shape else None
    if not isinstance(batch, str) or batch in ("", "?"):
        return None
    return next((axis for axis, dim in enumerate(spec.shape) if dim == batch), None)


def _resolved_shape(spec: TensorSpec, dims: dict[str, int]) -> tuple[int, ...] | None:
    shape = []
    for dim in spec.shape:
        if isinstance(dim, int):
            shape.append(dim)
        elif dim in dims:
            shape.append(dims[dim])
        else:
            return None
    return tuple(shape)


def _needs(spec: TensorSpec, why: str) -> InputSpecError:
    declared = ", ".join(str(d) for d in spec.shape)
    example = "0" if spec.dtype.startswith(("float", "bfloat")) else "VALUE"
    return InputSpecError(
        f"input {spec.name!r} ({spec.dtype}, shape [{declared}]) {why}; pass "
        f"--feed {spec.name}={example}:SHAPE (a number and a full shape) or "
        f"--feed {spec.name}=FILE.npy"
    )


def _default(spec: TensorSpec, dims: dict[str, int]) -> np.ndarray:
    if not spec.dtype.startswith("float"):
        declared = ", ".join(str(d) for d in spec.shape)
        raise InputSpecError(
            f"input {spec.name!r} ({spec.dtype}, shape [{declared}]) needs a value: pass "
            f"--feed {spec.name}=VALUE (feeds={{{spec.name!r}: VALUE}} in Python)"
        )
    shape = _resolved_shape(spec, dims)
    if shape is None:
        raise _needs(spec, "has dims that cannot be resolved")
    _check_size(spec.name, shape)
    return np.zeros(shape, dtype=_dtype(spec))


def _fit(spec: TensorSpec, value: FeedValue, dims: dict[str, int]) -> np.ndarray:
    dtype = _dtype(spec)
    if value.scalar is not None:
        shape = value.shape if value.shape is not None else _resolved_shape(spec, dims)
        if shape is None:
            raise _needs(spec, "has dims that cannot be resolved")
        _check_shape(spec, shape, dims, value.label)
        _check_size(spec.name, shape)
        return np.full(shape, _cast_scalar(spec, value.scalar, dtype), dtype=dtype)
    array = value.array if value.array is not None else _load(spec.name, value.path)
    _check_shape(spec, tuple(array.shape), dims, value.label)
    return _cast_array(spec, array, dtype, value.label)


def _dtype(spec: TensorSpec) -> np.dtype:
    try:
        dtype = np.dtype(spec.dtype)
    except TypeError:
        dtype = np.dtype(object)
    if dtype.kind not in "biuf":
        raise InputSpecError(
            f"input {spec.name!r} has dtype {spec.dtype}, which onnx-am cannot feed"
        )
    return dtype


def _cast_scalar(spec: TensorSpec, scalar, dtype: np.dtype):
    if dtype.kind in "iu" and (isinstance(scalar, float) and not scalar.is_integer()):
        raise InputSpecError(f"input {spec.name!r} is {spec.dtype}; {scalar:g} is not an integer")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not info.min <= int(scalar) <= info.max:
            raise InputSpecError(f"{scalar} does not fit input {spec.name!r} ({spec.dtype})")
        return int(scalar)
    return scalar


def _cast_array(spec: TensorSpec, array: np.ndarray, dtype: np.dtype, label: str) -> np.ndarray:
    if array.dtype == dtype:
        return np.ascontiguousarray(array)
    fits = np.can_cast(array.dtype, dtype, casting="same_kind") or (
        array.dtype.kind in "iub" and dtype.kind in "fiub"
    )
    if dtype.kind in "iu" and array.dtype.kind == "f":
        fits = bool(np.all(np.isfinite(array)) and np.all(array == np.round(array)))
    if not fits:
        raise InputSpecError(
            f"feed {spec.name}={label} holds {array.dtype}, which does not fit input "
            f"{spec.name!r} ({spec.dtype})"
        )
    return np.ascontiguousarray(array.astype(dtype))


def _check_shape(
    spec: TensorSpec, shape: tuple[int, ...], dims: dict[str, int], label: str
) -> None:
    declared = list(spec.shape)
    if spec.shape and len(shape) != len(spec.shape):
        raise InputSpecError(
            f"feed {spec.name}={label} has shape {list(shape)}; input {spec.name!r} is "
            f"declared {declared}"
        )
    for size, dim in zip(shape, spec.shape, strict=False):
        want = dim if isinstance(dim, int) else dims.get(dim)
        if want is not None and size != want:
            raise InputSpecError(
                f"feed {spec.name}={label} has shape {list(shape)}; input {spec.name!r} is "
                f"declared {declared}" + (f" with {dim}={want}" if isinstance(dim, str) else "")
            )


def _check_size(name: str, shape: tuple[int, ...]) -> None:
    if math.prod(shape) > MAX_FEED_ELEMENTS:
        raise InputSpecError(
            f"feed for input {name!r} of shape {list(shape)} has more than the "
            f"{MAX_FEED_ELEMENTS} elements onnx-am will allocate"
        )


def _load(name: str, path: Path | None) -> np.ndarray:
    if path is None or not path.is_file():
        raise InputSpecError(f"feed file for input {name!r} not found: {path}")
    try:
        _check_size(name, _header_shape(path))
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputSpecError(
            f"cannot read feed file {path} for input {name!r} as a .npy array: {first}"
        ) from exc
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise InputSpecError(
            f"feed file {path} for input {name!r} is not one .npy array of numbers"
        )
    return array


def _header_shape(path: Path) -> tuple[int, ...]:
    """The shape a ``.npy`` file declares, read before any data is."""
    with path.open("rb") as handle:
        major, _ = np.lib.format.read_magic(handle)
        read = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, _, _ = read(handle)
    return tuple(shape)
