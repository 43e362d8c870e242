"""``index.html``: the report for people, self-contained (inline CSS and JS, no network).

Images and plots are referenced by paths relative to the report directory, so the page opens
from disk and the directory can be moved or zipped as a whole.
"""

from __future__ import annotations

import math
from pathlib import Path

import jinja2

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE = "index.html.j2"
#: Longest side, in CSS pixels, of a result's picture in the results table.
THUMB_SIZE = 80
#: Width of a non-image input's plot in the results table.
THUMB_PLOT_WIDTH = 200


def thumbnail_size(width: int, height: int, pixels: bool = True) -> dict:
    """How big a result's picture appears in the table.

    Pictures no larger than :data:`THUMB_SIZE` are enlarged by an integer factor and drawn
    with nearest-neighbour scaling, so every input element is an equal square block; larger
    ones are shrunk smoothly to fit. Plots of non-image inputs get a fixed width.

    Args:
        width: the input's width in elements (pixels of the unscaled picture).
        height: its height.
        pixels: ``False`` for a plot of a non-image input (``width``/``height`` unused).

    Returns:
        ``{"width", "height", "pixelated"}``; ``height`` is ``None`` for plots.
    """
    if not pixels:
        return {"width": THUMB_PLOT_WIDTH, "height": None, "pixelated": False}
    longest = max(width, height, 1)
    if longest <= THUMB_SIZE:
        factor = THUMB_SIZE // longest
        return {"width": width * factor, "height": height * factor, "pixelated": True}
    scale = THUMB_SIZE / longest
    return {
        "width": max(1, round(width * scale)),
        "height": max(1, round(height * scale)),
        "pixelated": False,
    }


def render_html(doc: dict, plots: list[dict], thumbs: dict[str, dict] | None = None) -> str:
    """The page for one report.

    Args:
        doc: the report as written to ``report.json``.
        plots: ``{"title", "path"}`` for every plot, paths relative to the report.
        thumbs: :func:`thumbnail_size` of each result picture, keyed by its path in the
            report; pictures not listed are shown :data:`THUMB_SIZE` wide, pixelated.

    Returns:
        The HTML text. Results are listed by gain over standard AM, largest first.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.ChainableUndefined,
    )
    results = sorted(doc.get("results", []), key=_gain_key)
    trivial = {b["target"]: b.get("best") for b in doc.get("baselines", [])}
    return env.get_template(TEMPLATE).render(
        schema_version=doc.get("schema_version"),
        status=doc.get("status", "complete"),
        model=doc.get("model", {}),
        parity=doc.get("parity", {}),
        rewrites=doc.get("rewrites") or {},
        settings=doc.get("settings", {}),
        timings=doc.get("timings", {}),
        results=results,
        trivial=trivial,
        methods=list(dict.fromkeys(r["method"] for r in doc.get("results", []))),
        n_targets=len({r["target"] for r in results}),
        disagreements=sum(1 for r in results if not r.get("agrees", True)),
        not_beating=sum(1 for r in results if not r.get("beats_trivial", True)),
        plots=plots,
        thumbs=thumbs or {},
        default_thumb={"width": THUMB_SIZE, "height": None, "pixelated": True},
        fmt=_fmt,
        num=_num,
        shape=_shape,
    )


def _gain_key(entry: dict) -> tuple:
    gain = entry.get("gain_over_standard")
    return (gain is None, -(gain or 0.0), entry.get("target", ""), entry.get("method", ""))


def _fmt(value) -> str:
    """A value for people: 4 significant digits, ``-`` for missing, lists comma-separated."""
    if value is None or isinstance(value, jinja2.Undefined):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) if value else "-"
    return str(value)


def _num(value) -> str:
    """A value for the sorting script: full precision, empty when missing."""
    if value is None or isinstance(value, (jinja2.Undefined, bool)):
        return ""
    if not isinstance(value, (int, float)) or math.isnan(value):
        return ""
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(float(value))


def _shape(dims) -> str:
    """A tensor shape as ``[batch, 1, 28, 28]`` (``?`` when unknown)."""
    if not isinstance(dims, (list, tuple)):
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
