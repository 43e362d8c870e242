"""Pre-pass: a held input tied to the batch (a recurrent ``state [2, batch, 128]``) follows it.

:mod:`~onnx_am.importer.prepare.fed_inputs` holds a fed input at the value of one row, so an
input whose dim shares the optimized input's batch name is held with that dim 1. A batch of
several rows then meets a state of one row (an LSTM refuses the mismatch), and the graph only
runs row by row. Here the held value is broadcast to the optimized input's batch with ONNX ops
(``Shape``, ``Gather``, ``Concat``, ``Expand``): every row sees the same fed value, which is
what onnxruntime is fed for a batch (:meth:`~onnx_am.importer.feeds.Feed.batch`).

The broadcast tensor keeps the input's name and is declared with the fed shape and the batch
dim symbolic, so constant folding still knows its other dims (silero-vad tests
``Shape(state)[0]``) while nothing about the batch becomes a constant.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnx_am.importer.input_spec import InputSpec


def broadcast_fed_batch(
    model: onnx.ModelProto, spec: InputSpec, batch_axes: Mapping[str, int]
) -> tuple[onnx.ModelProto, list[str]]:
    """Make held inputs with a batch axis of size 1 follow the optimized input's batch.

    Args:
        model: modified in place (``prepare_model`` passes a copy); the inputs named in
            ``batch_axes`` are already initializers.
        spec: the optimized input; its declared batch dim must be named.
        batch_axes: held input name -> the axis tied to the optimized input's batch.

    Returns:
        The model and one note naming the inputs broadcast.
    """
    batch = spec.shape[0] if spec.shape else None
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    taken = _names(model)
    nodes: list[onnx.NodeProto] = []
    done = []
    for name, axis in batch_axes.items():
        tensor = initializers.get(name)
        if not isinstance(batch, str) or tensor is None or not _one_row(tensor, axis):
            continue
        held = _fresh(f"{name}__held", taken)
        tensor.name = held
        nodes += _expand_nodes(name, held, spec.name, axis, len(tensor.dims), taken, model)
        dims: list[int | str] = list(tensor.dims)
        dims[axis] = batch
        model.graph.value_info.append(helper.make_tensor_value_info(name, tensor.data_type, dims))
        done.append(f"{name} (axis {axis})")
    if not done:
        return model, []
    kept = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend([*nodes, *kept])
    return model, [f"held input(s) broadcast to the batch of {spec.name}: {', '.join(done)}"]


def _one_row(tensor: onnx.TensorProto, axis: int) -> bool:
    return 0 <= axis < len(tensor.dims) and tensor.dims[axis] == 1


def _expand_nodes(
    name: str,
    held: str,
    source: str,
    axis: int,
    rank: int,
    taken: set[str],
    model: onnx.ModelProto,
) -> list[onnx.NodeProto]:
    """``name = Expand(held, [1, .., batch of source, .., 1])``, batch at ``axis``."""
    shape, index, rows, target = (
        _fresh(f"{name}__{part}", taken) for part in ("input_shape", "first", "rows", "target")
    )
    model.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), index))
    parts = []
    for label, count in (("before", axis), ("after", rank - axis - 1)):
        if count:
            ones = _fresh(f"{name}__ones_{label}", taken)
            model.graph.initializer.append(numpy_helper.from_array(np.ones(count, np.int64), ones))
            parts.append(ones)
        if label == "before":
            parts.append(rows)
    return [
        helper.make_node("Shape", [source], [shape], name=shape),
        helper.make_node("Gather", [shape, index], [rows], name=rows, axis=0),
        helper.make_node("Concat", parts, [target], name=target, axis=0),
        helper.make_node("Expand", [held, target], [name], name=f"{name}__broadcast"),
    ]


def _names(model: onnx.ModelProto) -> set[str]:
    names = {value.name for value in [*model.graph.input, *model.graph.output]}
    names |= {tensor.name for tensor in model.graph.initializer}
    for node in model.graph.node:
        names |= {node.name, *node.input, *node.output}
    return names


def _fresh(base: str, taken: set[str]) -> str:
    name, suffix = base, 1
    while name in taken:
        name, suffix = f"{base}_{suffix}", suffix + 1
    taken.add(name)
    return name
