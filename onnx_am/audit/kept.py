"""What an interrupted ``analyze`` left in its report directory, said exactly.

Read from the files themselves (``report.json`` and ``checkpoint.pt``), so the answer holds
wherever the run was stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from onnx_am.audit.report import REPORT_FILE
from onnx_am.engine.checkpoint import CHECKPOINT_FILE, read_checkpoint


@dataclass(frozen=True)
class Kept:
    """The state of a report directory after a stop.

    Attributes:
        out_dir: the directory.
        report: whether ``report.json`` exists (with the plan).
        units_done, units_total: finished units, and units of the plan.
        results: results in ``report.json``.
        status: its ``status``.
        chunk_step, chunk_steps: where the checkpoint of the running chunk stands (None: no
            checkpoint).
        engine_batches_done: parts of the running chunk finished, in the checkpoint.
    """

    out_dir: Path
    report: bool
    units_done: int = 0
    units_total: int = 0
    results: int = 0
    status: str | None = None
    chunk_step: int | None = None
    chunk_steps: int | None = None
    engine_batches_done: int = 0

    @property
    def anything(self) -> bool:
        return self.report or self.chunk_step is not None

    def describe(self) -> str:
        """One sentence: what is kept, and how to continue."""
        if not self.anything:
            return f"nothing was kept (stopped before the plan was written to {self.out_dir})"
        parts = []
        if self.report:
            parts.append(
                f"{self.out_dir / REPORT_FILE} holds the plan and {self.units_done} of "
                f"{self.units_total} unit(s) ({self.results} result(s))"
            )
        if self.chunk_step is not None:
            done = (
                f", {self.engine_batches_done} part(s) of it finished"
                if self.engine_batches_done
                else ""
            )
            parts.append(
                f"{CHECKPOINT_FILE} holds the running chunk at step {self.chunk_step} of "
                f"{self.chunk_steps}{done}"
            )
        return "kept: " + "; ".join(parts) + "; continue with --resume"


def what_was_kept(out_dir: str | Path) -> Kept:
    """Read ``out_dir`` and say what an interrupted run left there."""
    root = Path(out_dir)
    doc = None
    report = root / REPORT_FILE
    if report.is_file():
        try:
            doc = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            doc = None
    checkpoint = read_checkpoint(root / CHECKPOINT_FILE)
    step = steps = None
    parts = 0
    if checkpoint is not None:
        step = checkpoint["step"]
        steps = checkpoint["steps"]
        parts = checkpoint["batches_done"]
        if step is None and parts:  # between two parts: the next one starts at step 0
            step = 0
    if doc is None:
        return Kept(root, False, chunk_step=step, chunk_steps=steps, engine_batches_done=parts)
    plan = doc.get("plan") or {}
    targets = plan.get("targets") or doc.get("settings", {}).get("targets", [])
    methods = {r["method"] for r in doc.get("results", [])}
    per_target: dict[str, int] = {}
    for entry in doc.get("results", []):
        per_target[entry["target"]] = per_target.get(entry["target"], 0) + 1
    labels = len(plan.get("methods") or methods) or 1
    return Kept(
        root,
        True,
        units_done=sum(1 for n in per_target.values() if n >= labels),
        units_total=len(targets),
        results=len(doc.get("results", [])),
        status=doc.get("status"),
        chunk_step=step,
        chunk_steps=steps,
        engine_batches_done=parts,
    )


__all__ = ["Kept", "what_was_kept"]
