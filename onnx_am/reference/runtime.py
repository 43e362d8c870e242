"""onnxruntime on the original, unmodified model, with intermediate tensors exposed.

This is the independent check on everything torch computes: the model onnxruntime runs is
the one the user gave, plus extra graph outputs for the intermediate tensors asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort

from onnx_am.errors import ExternalDataError, ModelLoadError, TargetError, shown
from onnx_am.importer.batching import join_rows
from onnx_am.importer.guard import foreign_errors
from onnx_am.importer.loading import all_tensors
from onnx_am.reference.optimization import FULL, ReferenceLevel

if TYPE_CHECKING:
    from onnx_am.importer.feeds import Feed


class OnnxRuntimeRunner:
    """An onnxruntime session on a copy of ``model`` that also outputs ``extra_outputs``.

    Args:
        model: the model (the original, unmodified one).
        input_name: the input a batch is given for.
        extra_outputs: intermediate tensors to expose.
        rowwise: run a batch one row at a time.
        feeds: the values of the other inputs (``ImportedModel.feeds``), given with every
            run; a value tied to the batch is repeated for each row.
        level: onnxruntime's graph optimizations (:mod:`onnx_am.reference.optimization`;
            default: all, onnxruntime's own default).
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        input_name: str,
        extra_outputs: list[str] | tuple[str, ...] = (),
        rowwise: bool = False,
        feeds: Mapping[str, Feed] | None = None,
        level: ReferenceLevel = FULL,
    ):
        self.input_name = input_name
        self.rowwise = rowwise
        self.feeds = dict(feeds or {})
        _refuse_external(model)
        exposed = expose_tensors(model, list(extra_outputs))
        options = level.session_options()  # onnxruntime logs errors too: only FATAL may print
        ort.set_default_logger_severity(4)
        with foreign_errors(ModelLoadError, "onnxruntime cannot load the model"):
            self.session = ort.InferenceSession(
                exposed.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        self.output_names = [out.name for out in self.session.get_outputs()]
        self.input_dtype = _numpy_dtype(self.session.get_inputs(), input_name)
        declared = next(v.shape for v in self.session.get_inputs() if v.name == input_name)
        self.fixed_batch = declared[0] if declared and isinstance(declared[0], int) else None

    def run(self, x: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run a batch; returns ``{tensor name: array}`` for ``names`` (default: all).

        Graphs declared with a fixed batch size, runners made with ``rowwise=True``, and
        graphs that fail on a whole batch are run row by row and the rows joined as the
        torch side joins them (:func:`~onnx_am.importer.batching.join_rows`; with
        ``rowwise=True`` also a batch of one row, so that a scalar output is ``[1]`` on both
        sides).
        """
        with foreign_errors(ModelLoadError, "onnxruntime cannot run the model"):
            return self._run(x, names or self.output_names)

    def _run(self, x: np.ndarray, wanted: list[str]) -> dict[str, np.ndarray]:
        fixed = self.fixed_batch is not None and x.shape[0] != self.fixed_batch
        if not self.rowwise and (not fixed or x.shape[0] <= 1):
            try:
                return self._run_once(x, wanted)
            except (ort.capi.onnxruntime_pybind11_state.Fail, RuntimeError):
                if x.shape[0] <= 1:
                    raise
        rows = [self._run_once(x[i : i + 1], wanted) for i in range(x.shape[0])]
        return {name: join_rows([row[name] for row in rows]) for name in wanted}

    def _run_once(self, x: np.ndarray, wanted: list[str]) -> dict[str, np.ndarray]:
        fed = {name: feed.batch(x.shape[0]) for name, feed in self.feeds.items()}
        values = self.session.run(wanted, {**fed, self.input_name: x.astype(self.input_dtype)})
        return dict(zip(wanted, values, strict=True))


def _refuse_external(model: onnx.ModelProto) -> None:
    """onnxruntime resolves external data against the working directory when given bytes:
    it only ever gets models whose external data :func:`load_model` has read and checked."""
    for tensor in all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            raise ExternalDataError(
                f"tensor {shown(tensor.name)} still refers to external data; load the model "
                "with onnx_am.importer.loading.load_model first"
            )


def expose_tensors(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """Copy of ``model`` where the given intermediate tensors are also graph outputs."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {out.name for out in exposed.graph.output}
    produced = {name for node in exposed.graph.node for name in node.output}
    produced |= {value.name for value in exposed.graph.input}
    for name in names:
        if name in present:
            continue
        if name not in produced:
            raise TargetError(f"no tensor named {name!r} in the model")
        exposed.graph.output.append(onnx.ValueInfoProto(name=name))
        present.add(name)
    return exposed


def _numpy_dtype(inputs, name: str) -> np.dtype:
    kinds = {
        "tensor(float)": np.float32,
        "tensor(double)": np.float64,
        "tensor(float16)": np.float16,
    }
    for value in inputs:
        if value.name == name:
            return np.dtype(kinds.get(value.type, np.float32))
    return np.dtype(np.float32)
