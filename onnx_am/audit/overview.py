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
from onnx_am.audit.summary import is_tie, summarize

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
    """The ``index.json`` entry of one model.

    ``methods`` is the report's own comparison of each method with standard AM (better,
    worse, tie, median gain, rescued units; :func:`onnx_am.audit.summary.summarize`);
    ``helped`` lists the units a decoupled or proxy result raised beyond a tie, with the
    largest gain of each, largest first.
    """
    entry = {"name": row.name, "model": row.model, "report": None, "error": row.error}
    doc = row.doc
    if doc is None:
        return entry
    results = doc.get("results", [])
    parity = doc.get("parity", {})
    summary = doc.get("summary") or summarize(results)
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
        methods=[
            {**m, "rescued": len(m["rescued"])} for m in summary.get("methods", []) if m["units"]
        ],
        helped=_helped(results),
    )
    return entry


def _helped(results: list[dict]) -> list[dict]:
    standard = {r["target"]: r.get("activation") for r in results if r["method_kind"] == "standard"}
    best: dict[str, dict] = {}
    for r in results:
        base = standard.get(r["target"])
        value = r.get("activation")
        if r["method_kind"] not in ("decoupled", "proxy") or base is None or value is None:
            continue
        gain = value - base
        if gain <= 0 or is_tie(value, base):
            continue
        if r["target"] not in best or gain > best[r["target"]]["gain"]:
            best[r["target"]] = {"target": r["target"], "method": r["method"], "gain": gain}
    return sorted(best.values(), key=lambda h: -h["gain"])


def overview_doc(rows: Sequence[ModelRow]) -> dict:
    """The content of ``index.json``."""
    return {"schema_version": 1, "models": [overview_entry(row) for row in rows]}


__all__ = ["INDEX_HTML", "INDEX_JSON", "ModelRow", "overview_doc", "overview_entry"]
