"""What a model is, as onnx-am sees it: inputs, rectifiers, batch support, parity.

:func:`inspect_model` summarizes an imported model; :func:`inspect_unimportable` summarizes
what can be read from a model that failed to import (its unsupported ops above all). Both
return an :class:`InspectReport`; text rendering lives in the command line.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import onnx

from onnx_am.errors import OnnxAmError, UnsupportedOpError
from onnx_am.importer.input_spec import describe_outputs, describe_value, graph_inputs
from onnx_am.importer.model import ImportedModel
from onnx_am.passes import RewriteRecord, UntouchedRecord, plan_onnx, plan_rewrites
from onnx_am.reference.parity import check_parity


@dataclass
class InspectReport:
    """A model summary; ``to_dict`` gives the ``inspect --json`` object.

    Attributes:
        producer: producer name and version from the model file.
        ir_version: ONNX IR version.
        opsets: domain -> opset version.
        inputs: every real graph input with its dtype and ``fed``: ``"optimized"`` for the
            optimized one (which also has ``layout`` and ``sample_shape``), else how its
            value was given (``"16000"``, ``"file state.npy"``, ``"zeros (default)"``).
        outputs: graph outputs.
        node_counts: op type -> number of nodes.
        rectifiers: ``{"node", "op_type", "output", "alpha"}`` per rectifier.
        rewrites: names of the nodes the decoupling pass would rewrite.
        other_nonlinearities: ``{"node", "op_type", "output", "reason"}`` per non-linearity the
            pass leaves alone (``reason`` empty unless there is one to give).
        unsupported_ops: ``{"node", "domain", "op_type", "opset"}`` per unconvertible node.
        batch: ``{"mode", "note"}``; ``mode`` is dynamic, rewritten or rowwise.
        parity: ``{"max_abs_diff", "max_rel_diff", "passed", "tolerance",
            "tolerance_note", "summary"}`` or ``None`` (the note says why a quantized model's
            tolerance is wider; ``summary`` names the first disagreement: shape, NaN/Inf,
            difference).
        prepass_notes: what the ONNX pre-passes changed.
        error: why the import failed, ``None`` when it succeeded.
    """

    producer: dict
    ir_version: int
    opsets: dict[str, int]
    inputs: list[dict]
    outputs: list[dict]
    node_counts: dict[str, int]
    rectifiers: list[dict] = field(default_factory=list)
    rewrites: list[str] = field(default_factory=list)
    other_nonlinearities: list[dict] = field(default_factory=list)
    unsupported_ops: list[dict] = field(default_factory=list)
    batch: dict | None = None
    parity: dict | None = None
    prepass_notes: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def inspect_model(imported: ImportedModel, parity: bool = True) -> InspectReport:
    """Summarize an imported model.

    Args:
        imported: the model from :func:`onnx_am.import_onnx`.
        parity: also compare torch with onnxruntime on random inputs.

    Returns:
        The :class:`InspectReport`.
    """
    report = _graph_summary(imported.original)
    report.inputs = imported.inputs
    rectifiers, others = find_rectifiers(imported)
    report.rectifiers = rectifiers
    report.rewrites = [r["node"] for r in rectifiers]
    report.other_nonlinearities = others
    report.batch = {"mode": imported.batch.mode, "note": imported.batch.note}
    report.prepass_notes = list(imported.prepass_notes)
    if parity:
        result = check_parity(imported)
        report.parity = {
            "max_abs_diff": result.max_abs_diff,
            "max_rel_diff": result.max_rel_diff,
            "passed": result.passed,
            "tolerance": result.tolerance,
            "tolerance_note": result.tolerance_note,
            "summary": result.summary(),
        }
    return report


def inspect_unimportable(model: onnx.ModelProto, error: OnnxAmError) -> InspectReport:
    """Summarize a loaded model that could not be imported, with the reason.

    Rectifiers and other non-linearities are what the pass's rules find in the ONNX graph;
    nodes that cannot be converted are listed under ``unsupported_ops`` only.
    """
    report = _graph_summary(model)
    report.rectifiers, report.other_nonlinearities = onnx_rectifiers(model)
    report.error = str(error)
    if isinstance(error, UnsupportedOpError):
        report.unsupported_ops = [
            {"node": node, "domain": domain, "op_type": op, "opset": version}
            for node, domain, op, version in error.nodes
        ]
        unsupported = {entry["node"] for entry in report.unsupported_ops}
        report.other_nonlinearities = [
            entry for entry in report.other_nonlinearities if entry["node"] not in unsupported
        ]
    return report


def find_rectifiers(imported: ImportedModel) -> tuple[list[dict], list[dict]]:
    """``(rectifiers, other non-linearities)``: what the decoupling pass would do."""
    return _as_dicts(*plan_rewrites(imported))


def onnx_rectifiers(model: onnx.ModelProto) -> tuple[list[dict], list[dict]]:
    """Rectifiers and other non-linearities read from the ONNX graph alone.

    The decoupling pass's own rules decide (:func:`onnx_am.passes.plan_onnx`), so a model
    that cannot be imported is described as the pass would see it.
    """
    return _as_dicts(*plan_onnx(model))


def _as_dicts(
    rewritten: list[RewriteRecord], untouched: list[UntouchedRecord]
) -> tuple[list[dict], list[dict]]:
    rectifiers = [
        {"node": r.node, "op_type": r.op_type, "output": r.output, "alpha": r.alpha}
        for r in rewritten
    ]
    others = [
        {"node": u.node, "op_type": u.op_type, "output": u.output, "reason": u.reason}
        for u in untouched
    ]
    return rectifiers, others


def _graph_summary(model: onnx.ModelProto) -> InspectReport:
    return InspectReport(
        producer={"name": model.producer_name, "version": model.producer_version},
        ir_version=model.ir_version,
        opsets={entry.domain or "ai.onnx": entry.version for entry in model.opset_import},
        inputs=[describe_value(v).to_dict() for v in graph_inputs(model)],
        outputs=[spec.to_dict() for spec in describe_outputs(model)],
        node_counts=dict(Counter(node.op_type for node in model.graph.node).most_common()),
    )
