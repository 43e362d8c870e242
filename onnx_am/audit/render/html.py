"""``index.html``: the report for people, self-contained (inline CSS and JS, no network).

Images and plots are referenced by paths relative to the report directory, so the page opens
from disk and the directory can be moved or zipped as a whole.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import jinja2
import markupsafe

from onnx_am.audit.summary import summarize
from onnx_am.engine.pace import pace_text

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
        width: the input's width in elements (pixels of the unscaled picture), or the
            plot's width in pixels for a non-image input.
        height: its height.
        pixels: ``False`` for a plot of a non-image input: shown
            :data:`THUMB_PLOT_WIDTH` wide, keeping its aspect ratio.

    Returns:
        ``{"width", "height", "pixelated"}``; ``height`` is ``None`` for a plot of unknown
        size.
    """
    if not pixels:
        height_px = round(THUMB_PLOT_WIDTH * height / width) if width > 0 and height > 0 else None
        return {"width": THUMB_PLOT_WIDTH, "height": height_px, "pixelated": False}
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
        plots: ``{"title", "path"}`` (and optionally ``width``, ``height``, ``group``) for
            every plot, paths relative to the report.
        thumbs: :func:`thumbnail_size` of each result picture, keyed by its path in the
            report; pictures not listed are shown :data:`THUMB_SIZE` wide, pixelated.

    Returns:
        The HTML text. Results are listed by gain over standard AM, largest first (ties in
        natural order of target and method). ``best(B)`` results are not rows of their own:
        the row of the result a ``best`` picked carries its mark.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.ChainableUndefined,
    )
    entries = doc.get("results", [])
    rows = sorted((e for e in entries if e.get("method_kind") != "best"), key=_gain_key)
    marks = _best_marks(entries, rows)
    row_ids = {(r.get("target"), r.get("method")): f"row-{i}" for i, r in enumerate(rows)}
    trivial = {b["target"]: b.get("best") for b in doc.get("baselines", [])}
    summary = doc.get("summary") or summarize(entries)
    plots = list(plots)
    return env.get_template(TEMPLATE).render(
        schema_version=doc.get("schema_version"),
        status=doc.get("status", "complete"),
        model=doc.get("model", {}),
        parity=doc.get("parity", {}),
        rewrites=doc.get("rewrites") or {},
        untouched=_untouched(doc.get("rewrites") or {}),
        settings=doc.get("settings", {}),
        plan=doc.get("plan") or {},
        pace=pace_text(doc["pace"]) if doc.get("pace") else None,
        labels=((doc.get("defaults") or {}).get("targets") or {}).get("labels") or {},
        timings=doc.get("timings", {}),
        summary=summary,
        results=rows,
        transformed=any(r.get("activation_transformed") is not None for r in rows),
        marks=marks,
        row_ids=row_ids,
        trivial=trivial,
        methods=list(dict.fromkeys(r["method"] for r in entries)),
        n_targets=len({r["target"] for r in entries}),
        disagreements=sum(1 for r in rows if not r.get("agrees", True)),
        not_beating=sum(1 for r in rows if not r.get("beats_trivial", True)),
        plots=[p for p in plots if p.get("group") != "contact"],
        sheets=[p for p in plots if p.get("group") == "contact"],
        thumbs=thumbs or {},
        default_thumb={"width": THUMB_SIZE, "height": None, "pixelated": True},
        fmt=_fmt,
        num=_num,
        shape=_shape,
        breakable=_breakable,
        tokens=doc.get("tokens"),  # tokens (issue 22)
        cut=doc.get("cut") or {},
    )


def _natural(text) -> tuple:
    """Sort key that compares digit runs as numbers: ``logits:2`` before ``logits:10``."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part.lower())
        for part in re.split(r"(\d+)", str(text or ""))
        if part
    )


def _gain_key(entry: dict) -> tuple:
    gain = entry.get("gain_over_standard")
    return (
        gain is None,
        -(gain or 0.0),
        _natural(entry.get("target", "")),
        _natural(entry.get("method", "")),
    )


def _best_marks(entries: list[dict], rows: list[dict]) -> dict[tuple, list[str]]:
    """``(target, method) -> [best labels]``: the rows each ``best(B)`` result picked.

    Reports written before ``picked`` was recorded are matched by equal activation (ties go
    to standard, as in the engine)."""
    by_target: dict[str, list[dict]] = {}
    for row in rows:
        by_target.setdefault(row.get("target"), []).append(row)
    marks: dict[tuple, list[str]] = {}
    for entry in entries:
        if entry.get("method_kind") != "best":
            continue
        candidates = by_target.get(entry.get("target"), [])
        picked = entry.get("picked")
        if picked is None:
            same = [r for r in candidates if r.get("activation") == entry.get("activation")]
            same.sort(key=lambda r: r.get("method_kind") != "standard")
            picked = same[0]["method"] if same else None
        if picked is not None:
            marks.setdefault((entry.get("target"), picked), []).append(entry["method"])
    return marks


def _untouched(rewrites: dict) -> list[dict]:
    """Nodes the rectifier pass left alone, grouped by op type: ``{"op_type", "nodes"}``."""
    groups: dict[str, list[str]] = {}
    for record in rewrites.get("untouched") or []:
        groups.setdefault(record.get("op_type", "?"), []).append(record.get("node", "?"))
    return [{"op_type": op, "nodes": nodes} for op, nodes in groups.items()]


def _breakable(text) -> markupsafe.Markup:
    """Escaped text that may wrap after ``/``, ``_``, ``:`` and ``.`` (never mid-word)."""
    escaped = str(markupsafe.escape("" if text is None else text))
    return markupsafe.Markup(re.sub(r"([/_:.])", r"\1<wbr>", escaped))


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
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items()) if value else "-"
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
    """A tensor shape as ``[batch, 1, 28, 28]``: a symbolic leading dim is the batch
    (exporters name it ``unk__54``, ``N``, ``batch_size``); ``?`` when unknown."""
    if not isinstance(dims, (list, tuple)):
        return "?"
    shown = []
    for index, dim in enumerate(dims):
        if dim is None or (isinstance(dim, str) and index == 0):
            shown.append("batch" if index == 0 else "?")
        else:
            shown.append(str(dim))
    return "[" + ", ".join(shown) + "]"
