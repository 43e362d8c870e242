"""The index across the reports of one many-model run: the data of ``index.json``.

One row per model: where its report is, whether it finished, parity with onnxruntime, how many
units, the flags (results onnxruntime does not reproduce, results that do not beat a trivial
input), and where the decoupled (or proxy) gradient helped: the units whose value it raised
above standard AM's. A model that could not be audited has a row with its error. The page
is drawn by :mod:`onnx_am.audit.render.overview`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from onnx_am.audit.report import HTML_FILE

INDEX_JSON = "index.json"
INDEX_HTML = "index.html"


@dataclass(frozen=True)
class ModelRow:
    """One model of a many-model run.

    Attributes:
        name: the report's folder name (the model file's stem, made unique).
        model: the model path as given.
        doc: its ``report.json`` content, or ``None`` when it could not be audited.
        error: why it could not be audited.
    """

    name: str
    model: str
    doc: dict | None = None
    error: str | None = None


def overview_entry(row: ModelRow) -> dict:
    """The ``index.json`` entry of one model."""
    entry = {"name": row.name, "model": row.model, "report": None, "error": row.error}
    doc = row.doc
    if doc is None:
        return entry
    results = doc.get("results", [])
    helped = [
        r
        for r in results
        if r.get("method_kind") in ("decoupled", "proxy")
        and r.get("gain_over_standard") is not None
        and r["gain_over_standard"] > 0
    ]
    compared = {
        r["target"]
        for r in results
        if r.get("method_kind") in ("decoupled", "proxy")
        and r.get("gain_over_standard") is not None
    }
    best_gain: dict[str, dict] = {}
    for r in helped:
        if r["target"] not in best_gain or r["gain_over_standard"] > best_gain[r["target"]]["gain"]:
            best_gain[r["target"]] = {
                "target": r["target"],
                "method": r["method"],
                "gain": r["gain_over_standard"],
            }
    parity = doc.get("parity", {})
    entry.update(
        report=f"{row.name}/{HTML_FILE}",
        status=doc.get("status"),
        parity_passed=parity.get("passed"),
        parity_max_abs_diff=parity.get("max_abs_diff"),
        units=len({r["target"] for r in results}),
        units_planned=len(doc.get("settings", {}).get("targets", [])),
        results=len(results),
        disagreements=sum(1 for r in results if not r.get("agrees", True)),
        not_beating_trivial=sum(1 for r in results if not r.get("beats_trivial", True)),
        decoupled_compared=len(compared),
        decoupled_helped=sorted(best_gain.values(), key=lambda h: -h["gain"]),
    )
    return entry


def overview_doc(rows: Sequence[ModelRow]) -> dict:
    """The content of ``index.json``."""
    return {"schema_version": 1, "models": [overview_entry(row) for row in rows]}


__all__ = ["INDEX_HTML", "INDEX_JSON", "ModelRow", "overview_doc", "overview_entry"]
