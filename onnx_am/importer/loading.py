"""Load an ONNX model from a path, raw bytes or a ModelProto, safely.

Model files are untrusted. External tensor data is only read from files inside the model's
own directory, and every byte range is checked against the file size before anything is read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from onnx_am.errors import ExternalDataError, ModelLoadError, one_line, shown
from onnx_am.importer.validation import validate_model, walk_graphs

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
        ResourceLimitError: a tensor larger than onnx-am allows.
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
    validate_model(model)
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


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor that can carry data: initializers, sparse initializers' values and
    indices, node attribute tensors (dense and sparse), in the main graph and all subgraphs."""
    for graph in walk_graphs(model.graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors
                present = [attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []
                for sparse in [*present, *attribute.sparse_tensors]:
                    yield sparse.values
                    yield sparse.indices


def _is_external(tensor: onnx.TensorProto) -> bool:
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        if len(tensor.external_data):
            del tensor.external_data[:]  # stale entries: never let a later reader follow them
        return False
    return True


def _load_external_data(model: onnx.ModelProto, base_dir: Path | None) -> None:
    """Read every external tensor's bytes ourselves, after checking where and how many.

    onnx's own loader skips sparse tensors, and onnxruntime resolves what is left against
    the working directory; so nothing external survives this function.
    """
    tensors = [tensor for tensor in all_tensors(model) if _is_external(tensor)]
    if not tensors:
        return
    if base_dir is None:
        raise ExternalDataError(
            f"model has external data ({shown(tensors[0].name)}) but was given as bytes or a "
            "ModelProto; load it from its file path instead"
        )
    for tensor in tensors:
        target, offset, length = _check_external_tensor(tensor, base_dir)
        with open(target, "rb") as handle:
            handle.seek(offset)
            data = handle.read(length)
        tensor.raw_data = data
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT


def _check_external_tensor(tensor: onnx.TensorProto, base_dir: Path) -> tuple[Path, int, int]:
    """``(file, offset, length)`` of an external tensor, all checked; raises otherwise."""
    label = f"external data of tensor {shown(tensor.name)}"
    entries = [(entry.key, entry.value) for entry in tensor.external_data]
    keys = [key for key, _ in entries]
    if len(set(keys)) != len(keys):
        raise ExternalDataError(f"{label} names a key twice: {sorted(keys)[:6]}")
    info = dict(entries)
    location = info.get("location", "")
    if isinstance(location, bytes) or "\0" in location:
        raise ExternalDataError(f"{label} has a location that is not valid UTF-8 or has a NUL")
    try:
        target = (base_dir / location).resolve()
        inside = bool(location) and not os.path.isabs(location) and target.is_relative_to(base_dir)
        is_file = inside and target.is_file()
        size = target.stat().st_size if is_file else 0
    except (OSError, RuntimeError, ValueError) as exc:
        raise ExternalDataError(
            f"{label} has an unusable location {shown(location)}: {one_line(exc, 120)}"
        ) from exc
    if not inside:
        raise ExternalDataError(
            f"{label} points outside the model directory: {shown(location)} (refused)"
        )
    if not is_file:
        raise ExternalDataError(f"{label} is missing (no file {shown(location)} beside the model)")
    offset = _byte_count(info.get("offset", "0"), "offset", label)
    length = _byte_count(info["length"], "length", label) if "length" in info else size - offset
    if offset + length > size or length < 0:
        raise ExternalDataError(
            f"{label} reads bytes {offset}..{offset + length} of {shown(location)}, which "
            f"has only {size} bytes"
        )
    return target, offset, length


def _byte_count(text: str, what: str, label: str) -> int:
    """A non-negative decimal integer, as ONNX writes offsets and lengths."""
    if not (isinstance(text, str) and text.isascii() and text.isdigit() and len(text) <= 18):
        raise ExternalDataError(f"{label} has an invalid {what} {shown(text)}")
    return int(text)
