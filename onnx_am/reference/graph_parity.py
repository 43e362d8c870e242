"""Parity of a :class:`~onnx_am.importer.graph.ConvertedGraph` against onnxruntime.

The inputs are given, not drawn (token ids must be in the vocabulary, masks 0 or 1), so
models whose inputs are all integers can be checked too. onnxruntime runs the original,
unmodified model with the same inputs plus the graph's feeds.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnxruntime as ort
import torch

from onnx_am.errors import ImportFailedError, ModelLoadError
from onnx_am.importer.graph import ConvertedGraph
from onnx_am.importer.guard import foreign_errors
from onnx_am.reference.optimization import quiet_session_options, reference_level
from onnx_am.reference.parity import ParityResult, _compare
from onnx_am.reference.quantized import effective_tolerance
from onnx_am.reference.runtime import _refuse_external, expose_tensors
from onnx_am.reference.tolerance import DEFAULT_TOLERANCE


def run_onnxruntime(
    graph: ConvertedGraph,
    inputs: Mapping[str, np.ndarray],
    fuse: bool | None = None,
    names: list[str] | None = None,
) -> list[np.ndarray]:
    """The original model's outputs under onnxruntime for ``inputs`` plus the graph's feeds.

    Args:
        graph: the converted graph (its original model runs).
        inputs: a value for every name of ``graph.input_names``.
        fuse: onnxruntime's default graph optimizations. ``False`` keeps only the basic
            ones, which compute what the ONNX ops specify: the extended level rewrites an
            int8 weight-only ``DequantizeLinear -> MatMul`` into ``MatMulNBits`` with
            ``accuracy_level=4``, which quantizes the activations to int8 too (about 0.7 %
            of the logits' scale on ``bert_trigger_w8.onnx``). ``None``: the reference's
            level (:func:`~onnx_am.reference.optimization.reference_level`: basic for such
            graphs, else all).
        names: ONNX tensors to return (intermediate ones included); default the outputs.

    Raises:
        ModelLoadError: onnxruntime cannot load or run the model.
        TargetError: a name is not a tensor of the model.
    """
    _refuse_external(graph.original)
    wanted = names or graph.output_names
    model = expose_tensors(graph.original, wanted)
    if fuse is None:
        fuse = reference_level(graph.original).name == "all"
    options = quiet_session_options()
    if not fuse:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with foreign_errors(ModelLoadError, "onnxruntime cannot run the model"):
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        fed = {**graph.feeds, **{name: np.asarray(v) for name, v in inputs.items()}}
        return session.run(wanted, fed)


def check_graph_parity(
    graph: ConvertedGraph,
    inputs: Mapping[str, np.ndarray],
    tolerance: float = DEFAULT_TOLERANCE,
    fuse: bool | None = None,
) -> ParityResult:
    """Run torch and onnxruntime on the same given inputs and compare every output.

    Args:
        graph: the converted graph.
        inputs: a value for every name of ``graph.input_names`` (the batch is axis 0).
        tolerance: allowed max abs diff relative to the output's magnitude (raised to one
            integer step for quantized models, as in :func:`~onnx_am.reference.parity.
            check_parity`).
        fuse: run onnxruntime with its default graph optimizations, or basic ones only;
            ``None``: the reference's level (see :func:`run_onnxruntime`).

    Raises:
        InputSpecError: an input is missing or unknown.
        ImportFailedError: the torch graph fails on the inputs.
        ModelLoadError: onnxruntime cannot run the model.
    """
    tolerance, note = effective_tolerance(graph.original, tolerance)
    with foreign_errors(ImportFailedError, "the converted torch graph fails"):
        with torch.no_grad():
            got = graph.run(inputs)
    level = reference_level(graph.original)
    if fuse is None:
        fuse = level.name == "all"
    want = run_onnxruntime(graph, inputs, fuse)
    batch = len(next(iter(inputs.values()))) if inputs else 1
    per_output = [
        _compare(name, g, w, batch, tolerance)
        for name, g, w in zip(graph.output_names, got, want, strict=True)
    ]
    reason = level.reason if not fuse and level.name == "basic" else ""
    return ParityResult.of(
        per_output, tolerance, batch, note, onnxruntime_optimization="all" if fuse else "basic",
        optimization_note=reason,
    )  # fmt: skip
