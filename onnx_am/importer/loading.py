"""Load an ONNX model from a path, raw bytes or a ModelProto, safely.

Model files are untrusted. External tensor data is only read from files inside the model's
own directory, and every byte range is checked against the file size before anything is read.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from onnx_am.errors import ExternalDataError, ModelLoadError

ModelSource = str | os.PathLike | bytes | onnx.ModelProto


def load_model(source: ModelSource) -> onnx.ModelProto:
    """Load an ONNX model, with its external data, refusing anything unsafe.

    Args:
        source: a path to a ``.onnx`` file (external data files beside it are loaded),
            the serialized bytes of a model, or a ``ModelProto`` (copied, never modified).

    Returns:
        A self-contained ``ModelProto`` with all tensor data loaded.

    Raises:
        ModelLoadError: missing, empty, truncated or non-ONNX input.
        ExternalDataError: external data missing, too short, or outside the model directory.
    """
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        base_dir = None
    elif isinstance(source, bytes | bytearray):
        model = _parse(bytes(source), "<bytes>")
        base_dir = None
    else:
        path = Path(source)
        model = _parse(_read_file(path), str(path))
        base_dir = path.resolve().parent
    _check_structure(model, str(source) if base_dir else "model")
    _load_external_data(model, base_dir)
    _check_tensor_sizes(model)
    return model


def _read_file(path: Path) -> bytes:
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelLoadError(f"model path is not a file: {path}")
    data = path.read_bytes()
    if not data:
        raise ModelLoadError(f"model file is empty: {path}")
    return data


def _parse(data: bytes, where: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"not a valid ONNX model (truncated or not ONNX): {where}") from exc
    return model


def _check_structure(model: onnx.ModelProto, where: str) -> None:
    # Protobuf parses many arbitrary byte strings without error; a real model has an IR
    # version, an opset and a graph with at least one output.
    if model.ir_version <= 0 or not model.opset_import or not model.graph.output:
        raise ModelLoadError(f"not a valid ONNX model (no IR version, opset or outputs): {where}")


def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [
        tensor
        for tensor in external_data_helper._get_all_tensors(model)
        if external_data_helper.uses_external_data(tensor)
    ]


def _load_external_data(model: onnx.ModelProto, base_dir: Path | None) -> None:
    tensors = _external_tensors(model)
    if not tensors:
        return
    if base_dir is None:
        raise ExternalDataError(
            f"model has external data ({tensors[0].name!r}) but was given as bytes or a "
            "ModelProto; load it from its file path instead"
        )
    for tensor in tensors:
        _check_external_tensor(tensor, base_dir)
    external_data_helper.load_external_data_for_model(model, str(base_dir))


def _check_external_tensor(tensor: onnx.TensorProto, base_dir: Path) -> None:
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    target = (base_dir / location).resolve()
    if not location or os.path.isabs(location) or not target.is_relative_to(base_dir):
        raise ExternalDataError(
            f"external data of tensor {tensor.name!r} points outside the model directory: "
            f"{location!r} (refused)"
        )
    if not target.is_file():
        raise ExternalDataError(
            f"external data file of tensor {tensor.name!r} is missing: {target}"
        )
    offset = int(info.get("offset", 0) or 0)
    length = info.get("length")
    size = target.stat().st_size
    end = offset + int(length) if length else size
    if offset < 0 or end > size:
        raise ExternalDataError(
            f"external data of tensor {tensor.name!r} reads bytes {offset}..{end} of "
            f"{target.name}, which has only {size} bytes"
        )


#: Where each data type keeps its values when not in ``raw_data``.
_TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")


def _check_tensor_sizes(model: onnx.ModelProto) -> None:
    """Every initializer holds as many values as its dims declare (nothing huge is implied)."""
    for tensor in model.graph.initializer:
        if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
            continue
        declared = 1
        for dim in tensor.dims:
            declared *= int(dim)
        held = _held_elements(tensor)
        if held is not None and held != declared:
            raise ModelLoadError(
                f"initializer {tensor.name!r} declares shape {list(tensor.dims)} "
                f"({declared} elements) but holds {held}"
            )


def _held_elements(tensor: onnx.TensorProto) -> int | None:
    if tensor.HasField("raw_data"):
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        bits = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}.get(tensor.data_type)
        if bits:
            return None  # packed sub-byte types: leave them to the converter
        return len(tensor.raw_data) // itemsize
    for name in _TYPED_FIELDS:
        values = getattr(tensor, name)
        if len(values):
            complex_pairs = tensor.data_type in (
                onnx.TensorProto.COMPLEX64,
                onnx.TensorProto.COMPLEX128,
            )
            return len(values) // 2 if complex_pairs else len(values)
    return 0
