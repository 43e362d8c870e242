"""``index.html``: the report for people, self-contained (inline CSS and JS, no network).

Images and plots are referenced by paths relative to the report directory, so the page opens
from disk and the directory can be moved or zipped as a whole.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE = "index.html.j2"


def render_html(doc: dict, plots: list[dict]) -> str:
    """The page for one report.

    Args:
        doc: the report as written to ``report.json``.
        plots: ``{"title", "path"}`` for every plot, paths relative to the report.

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
        fmt=_fmt,
    )


def _gain_key(entry: dict) -> tuple:
    gain = entry.get("gain_over_standard")
    return (gain is None, -(gain or 0.0), entry.get("target", ""), entry.get("method", ""))


def _fmt(value) -> str:
    if value is None or isinstance(value, jinja2.Undefined):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
