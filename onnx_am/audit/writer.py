"""The results of an audit so far, and their writing into the report directory.

A :class:`ResultWriter` keeps every finished result (in plan order, whatever order its chunk
finished in), saves its picture and array as it comes in, and writes ``report.json`` after
each chunk. It knows nothing of scheduling (:mod:`onnx_am.audit.chunks`) or of the page
(:mod:`onnx_am.audit.render.site`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnx_am.audit.render.images import DisplayDomain
from onnx_am.audit.render.plots import save_picture
from onnx_am.audit.report import REPORT_FILE, ReportDir
from onnx_am.audit.summary import summarize
from onnx_am.engine.pace import Pace
from onnx_am.engine.plan import RunPlan
from onnx_am.engine.results import MaximizeReport, TargetBaseline, UnitResult
from onnx_am.objectives import Target


class ResultWriter:
    """Results gathered so far, each saved as it comes in; ``report.json`` after each chunk.

    Args:
        report: the report directory being written.
        plan: what is optimized (its targets and methods order the results).
        display: how pictures are drawn.
        doc: the parts of ``report.json`` known before optimizing (model, parity, settings).
    """

    def __init__(self, report: ReportDir, plan: RunPlan, display: DisplayDomain, doc: dict):
        self.report, self.plan, self.display, self.doc = report, plan, display, doc
        self.results: dict[tuple[Target, str], UnitResult] = {}
        self.entries: dict[tuple[Target, str], dict] = {}
        self.baselines: dict[str, TargetBaseline] = {}

    def restore(self, results: list[UnitResult], baselines: list[TargetBaseline]) -> None:
        """Take the results and baselines of the report being resumed."""
        for result in results:
            self._keep(result, self.report.image_name(result))
        self.baselines.update({b.target: b for b in baselines})

    def accept(self, found: MaximizeReport, pace: Pace | None = None) -> None:
        """Save a finished chunk's results and baselines; write ``report.json``."""
        for result in found.results:
            self._save(result)
        self.baselines.update({b.target: b for b in found.baselines})
        self.report.write_json(REPORT_FILE, self.document("running", pace))

    def finished(self, targets: list[Target]) -> bool:
        """Whether every method of every one of ``targets`` is in."""
        return all((t, label) in self.results for t in targets for label in self.plan.labels)

    @property
    def units_done(self) -> int:
        """Units whose every method is in (from the report being resumed)."""
        return sum(1 for t in self.plan.targets if self.finished([t]))

    def document(self, status: str, pace: Pace | None = None, **more) -> dict:
        """``report.json`` as it stands: the known parts, what ``pace`` cut (if anything),
        the results and baselines so far, and ``more`` (e.g. the token searches)."""
        names = [t.name for t in self.plan.targets]
        entries = [self.entries[key] for key in self._keys()]
        paced = {"pace": pace.to_dict()} if pace and pace.cut_anything else {}
        return {
            **self.doc,
            **paced,
            **more,
            "status": status,
            "summary": summarize(entries),
            "results": entries,
            "baselines": [self.baselines[n].to_dict() for n in names if n in self.baselines],
        }

    def ordered(self) -> list[UnitResult]:
        """The results in plan order (targets, then methods)."""
        return [self.results[key] for key in self._keys()]

    def _keys(self) -> list[tuple[Target, str]]:
        return [
            (t, label)
            for t in self.plan.targets
            for label in self.plan.labels
            if (t, label) in self.results
        ]

    def _save(self, result: UnitResult) -> None:
        name = self.report.image_name(result)
        image = np.asarray(result.image)
        self.report.write_with(str(Path(name).with_suffix(".npy")), lambda tmp: np.save(tmp, image))
        self.report.write_with(name, lambda tmp: save_picture(image, self.display, Path(tmp)))
        self._keep(result, name)

    def _keep(self, result: UnitResult, name: str) -> None:
        key = (result.target, result.method)
        self.results[key] = result
        self.entries[key] = self.report.result_entry(
            result, name if result.image is not None else None
        )


__all__ = ["ResultWriter"]
