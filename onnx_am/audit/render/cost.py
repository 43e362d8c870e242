"""What drawing a report costs on this machine now: timed on a small real drawing, not assumed.

A report's plots are drawn after its chunks, so its plan keeps time for them. That time grows
with the results (a contact-sheet cell and a convergence line each) and with how busy the
machine is (30 results of a digits CNN took 13.5 to 20 s at a load of 22 on the shared 2-core
machine). So it is measured when a plan is made: the contact sheet and the convergence plot
of :data:`SAMPLE` results of the model's own input shape are drawn to a temporary folder and
timed, once per input shape and process (the models of one command share it). Drawing the two
figures is the fixed part of a report (with its page); a further result costs
:data:`RESULT_SHARE` of that time. Both are scaled by :data:`RENDER_MARGIN`.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnx_am.audit.render.images import DisplayDomain
from onnx_am.audit.render.plots import plot_contact_sheet, plot_convergence
from onnx_am.engine.results import UnitResult
from onnx_am.objectives import Target

#: Results drawn in the timed sample (one unit, two methods).
SAMPLE = 2
#: A further result's drawing (a contact-sheet cell, a convergence line, a thumbnail) as a
#: share of the timed sample. Measured at a load of 22: the sample took 2.06 s and 30 results
#: 13.5 s, so a result took (13.5 - 2.06) / 28 = 0.41 s, a fifth of the sample.
RESULT_SHARE = 0.2
#: Factor on the timed seconds: the sample is small and the machine's load changes.
RENDER_MARGIN = 1.5

_measured: dict[tuple, RenderCost] = {}


@dataclass(frozen=True)
class RenderCost:
    """Seconds of drawing: per result, and once per report (its page)."""

    per_result: float
    fixed: float


def measure_render(shape: tuple[int, ...], domain: DisplayDomain) -> RenderCost:
    """The drawing cost of a report whose inputs have ``shape`` (one sample, no batch), timed
    now on :data:`SAMPLE` results (the first time for this shape in this process)."""
    key = (tuple(shape), domain.layout)
    if key not in _measured:
        _measured[key] = _time_sample(tuple(shape), domain)
    return _measured[key]


def _time_sample(shape: tuple[int, ...], domain: DisplayDomain) -> RenderCost:
    results = [
        UnitResult(
            Target("sample", unit),
            method,
            "standard",
            None,
            1.0,
            trace=[0.0, 0.5, 1.0],
            image=np.zeros(shape, dtype=np.float32),
        )
        for unit in range(SAMPLE // 2)
        for method in ("standard", "decoupled")
    ]
    with tempfile.TemporaryDirectory(prefix="onnx-am-render-") as folder:
        tic = time.perf_counter()
        plot_contact_sheet(results, domain, Path(folder) / "contact.png")
        plot_convergence(results, Path(folder) / "convergence.png")
        seconds = time.perf_counter() - tic
    return RenderCost(
        per_result=RENDER_MARGIN * RESULT_SHARE * seconds, fixed=RENDER_MARGIN * seconds
    )


__all__ = ["RENDER_MARGIN", "RESULT_SHARE", "SAMPLE", "RenderCost", "measure_render"]
