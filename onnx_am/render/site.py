"""Everything a finished report shows besides report.json: plots and index.html."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from onnx_am.render.html import render_html
from onnx_am.render.images import DisplayDomain
from onnx_am.render.plots import (
    contact_sheet_pages,
    plot_beta_sweep,
    plot_contact_sheet,
    plot_convergence,
)
from onnx_am.report import HTML_FILE, PLOTS_DIR, ReportDir
from onnx_am.results import UnitResult


def render_site(
    report: ReportDir, doc: dict, results: Sequence[UnitResult], domain: DisplayDomain
) -> list[dict]:
    """Write the plots and ``index.html`` of a report.

    Args:
        report: the report directory.
        doc: the report as written to ``report.json``.
        results: the results, images included.
        domain: how inputs map to pixels.

    Returns:
        ``{"title", "path"}`` for every plot written (paths relative to the report).
    """
    plots: list[dict] = []
    if not results:
        report.write_text(HTML_FILE, render_html(doc, plots))
        return plots

    def add(title: str, name: str, draw) -> None:
        relative = f"{PLOTS_DIR}/{name}"
        report.write_with(relative, lambda tmp: draw(Path(tmp)))
        plots.append({"title": title, "path": relative})

    add(
        "Convergence: best activation so far vs step",
        "convergence.png",
        lambda p: plot_convergence(results, p),
    )
    if _swept(results):
        add(
            "Beta sweep: activation vs backward slope",
            "beta_sweep.png",
            lambda p: plot_beta_sweep(results, p),
        )
    pages = contact_sheet_pages(results)
    for number, page in enumerate(pages, 1):
        suffix = f" ({number}/{len(pages)})" if len(pages) > 1 else ""
        add(
            f"Contact sheet{suffix}: best input per unit and method",
            f"contact_sheet_{number}.png",
            lambda p, page=page: plot_contact_sheet(page, domain, p),
        )
    report.write_text(HTML_FILE, render_html(doc, plots))
    return plots


def _swept(results: Sequence[UnitResult]) -> bool:
    for kind in ("decoupled", "proxy"):
        if (
            len(
                {
                    r.backward_slope
                    for r in results
                    if r.method_kind == kind and r.backward_slope is not None
                }
            )
            > 1
        ):
            return True
    return False
