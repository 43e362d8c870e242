"""Everything a finished report shows besides report.json: plots and index.html."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from onnx_am.audit.render.html import render_html, thumbnail_size
from onnx_am.audit.render.images import DisplayDomain, image_pixels, is_image
from onnx_am.audit.render.plots import (
    contact_sheet_pages,
    convergence_pages,
    plot_beta_sweep,
    plot_contact_sheet,
    plot_convergence,
)
from onnx_am.audit.report import HTML_FILE, PLOTS_DIR, ReportDir
from onnx_am.engine.results import UnitResult


def render_site(
    report: ReportDir, doc: dict, results: Sequence[UnitResult], domain: DisplayDomain
) -> list[dict]:
    """Write the plots and ``index.html`` of a report (:func:`render_plots` + :func:`write_page`).

    Args:
        report: the report directory.
        doc: the report as written to ``report.json``.
        results: the results, images included.
        domain: how inputs map to pixels.

    Returns:
        The plots written (see :func:`render_plots`).
    """
    plots = render_plots(report, results, domain)
    write_page(report, doc, plots, results, domain)
    return plots


def render_timed(
    report: ReportDir,
    doc: dict,
    results: Sequence[UnitResult],
    domain: DisplayDomain,
    timings: dict,
    started: float,
) -> None:
    """:func:`render_site`, with the page showing every timing: the plots' time and the run's
    total (from ``started``, ``time.perf_counter``) go into ``timings`` (the dict ``doc``
    shows) before the page is written."""
    tic = time.perf_counter()
    plots = render_plots(report, results, domain)
    timings["render"] = time.perf_counter() - tic
    timings["total"] = time.perf_counter() - started
    write_page(report, doc, plots, results, domain)


def render_plots(
    report: ReportDir, results: Sequence[UnitResult], domain: DisplayDomain
) -> list[dict]:
    """Write the convergence, beta-sweep and contact-sheet plots of a report.

    Returns:
        ``{"title", "path", "width", "height", "group"}`` for every plot written (paths
        relative to the report; size in pixels; ``group`` is ``"convergence"``,
        ``"sweep"`` or ``"contact"``).
    """
    plots: list[dict] = []
    if not results:
        return plots

    def add(title: str, name: str, group: str, draw) -> None:
        relative = f"{PLOTS_DIR}/{name}"
        path = report.write_with(relative, lambda tmp: draw(Path(tmp)))
        with Image.open(path) as picture:
            width, height = picture.size
        plots.append(
            {"title": title, "path": relative, "width": width, "height": height, "group": group}
        )

    pages = convergence_pages(results)
    for number, page in enumerate(pages, 1):
        add(
            f"Convergence{_page(number, len(pages))}: best activation so far vs step",
            "convergence.png" if number == 1 else f"convergence_{number}.png",
            "convergence",
            lambda p, page=page: plot_convergence(page, p),
        )
    if _swept(results):
        add(
            "Beta sweep: activation vs backward slope",
            "beta_sweep.png",
            "sweep",
            lambda p: plot_beta_sweep(results, p),
        )
    pages = contact_sheet_pages(results)
    for number, page in enumerate(pages, 1):
        add(
            f"Contact sheet{_page(number, len(pages))}: best input per unit and method",
            f"contact_sheet_{number}.png",
            "contact",
            lambda p, page=page: plot_contact_sheet(page, domain, p),
        )
    return plots


def write_page(
    report: ReportDir,
    doc: dict,
    plots: list[dict],
    results: Sequence[UnitResult],
    domain: DisplayDomain,
) -> None:
    """Write ``index.html`` for ``doc`` with the given plots and the results' thumbnails."""
    report.write_text(HTML_FILE, render_html(doc, plots, _thumbnails(report, results, domain)))


def _thumbnails(
    report: ReportDir, results: Sequence[UnitResult], domain: DisplayDomain
) -> dict[str, dict]:
    """Display size of each result's picture in the table, keyed by its path in the report."""
    thumbs = {}
    for result in results:
        if result.image is None:
            continue
        image = result.image
        if is_image(image.shape, domain.layout):
            height, width = image_pixels(image, domain, min_size=1).shape[:2]
            thumbs[report.image_name(result)] = thumbnail_size(width, height, pixels=True)
        else:
            width, height = _png_size(report, report.image_name(result))
            thumbs[report.image_name(result)] = thumbnail_size(width, height, pixels=False)
    return thumbs


def _png_size(report: ReportDir, relative: str) -> tuple[int, int]:
    """Pixel size of a picture in the report; ``(0, 0)`` when it is not there."""
    try:
        with Image.open(report.path(relative)) as picture:
            return picture.size
    except OSError:
        return 0, 0


def _page(number: int, total: int) -> str:
    return f" ({number}/{total})" if total > 1 else ""


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
