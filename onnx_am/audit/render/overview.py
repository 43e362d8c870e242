"""``index.html`` of a many-model run: a self-contained table, a row per model, each linking
its own report (paths relative to the index, so the folder can be moved as a whole)."""

from __future__ import annotations

#: Units listed per model under "decoupled helped" (the count covers all of them).
HELPED_SHOWN = 5


def render_overview(doc: dict) -> str:
    """``index.html``: a self-contained table with a row per model, linking each report."""
    head = (
        "<tr><th>model</th><th>status</th><th>parity</th><th>units</th><th>flags</th>"
        "<th>decoupled helped</th></tr>"
    )
    rows = "\n".join(_html_row(entry) for entry in doc["models"])
    count = len(doc["models"])
    failed = sum(1 for e in doc["models"] if e["error"])
    lead = f"{count} model(s)" + (f", {failed} could not be audited" if failed else "")
    return _PAGE.format(lead=_esc(lead), head=head, rows=rows)


def _html_row(entry: dict) -> str:
    name = _esc(entry["name"])
    if entry["error"]:
        cells = [
            f"<td><b>{name}</b><br><code>{_esc(entry['model'])}</code></td>",
            '<td class="bad">failed</td>',
            f'<td colspan="4" class="bad">{_esc(entry["error"])}</td>',
        ]
        return "<tr>" + "".join(cells) + "</tr>"
    status = entry["status"]
    status_cell = (
        '<td class="ok">complete</td>'
        if status == "complete"
        else f'<td class="warn">{_esc(status)} (continue with --resume)</td>'
    )
    parity = (
        f'<td class="ok">passed ({_num(entry["parity_max_abs_diff"])})</td>'
        if entry["parity_passed"]
        else f'<td class="bad">FAILED ({_num(entry["parity_max_abs_diff"])})</td>'
    )
    units = f'<td class="num">{entry["units"]}/{entry["units_planned"]}</td>'
    flags = []
    if entry["disagreements"]:
        flags.append(f'<span class="bad">{entry["disagreements"]} onnxruntime disagrees</span>')
    if entry["not_beating_trivial"]:
        flags.append(f'<span class="warn">{entry["not_beating_trivial"]} below trivial</span>')
    helped_cell = "<td>" + _helped(entry) + "</td>"
    return (
        f'<tr><td><a href="{_esc(entry["report"])}"><b>{name}</b></a><br>'
        f"<code>{_esc(entry['model'])}</code></td>"
        + status_cell
        + parity
        + units
        + f"<td>{'<br>'.join(flags) or '<span class=ok>none</span>'}</td>"
        + helped_cell
        + "</tr>"
    )


def _helped(entry: dict) -> str:
    """Each method against standard, then the units it raised most."""
    lines = []
    for m in entry["methods"]:
        median = "" if m["median_gain"] is None else f", median gain {_num(m['median_gain'])}"
        rescued = f", rescued {m['rescued']}" if m["rescued"] else ""
        lines.append(
            f"<code>{_esc(m['method'])}</code>: better on {m['better']} of {m['units']}"
            f"{median}{rescued}"
        )
    helped = entry["helped"]
    if helped:
        listing = ", ".join(
            f"<code>{_esc(h['target'])}</code> +{_num(h['gain'])}" for h in helped[:HELPED_SHOWN]
        )
        more = f" ({len(helped) - HELPED_SHOWN} more)" if len(helped) > HELPED_SHOWN else ""
        lines.append(f"largest gains: {listing}{more}")
    return "<br>".join(lines) or '<span class="muted">no comparison with standard</span>'


def _num(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def _esc(text) -> str:
    return (
        str(text)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
    )


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>onnx-am reports</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.4em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
code {{ font-size: 0.9em; }}
.muted {{ color: #666; }}
.ok {{ color: #176b2c; }} .bad {{ color: #b00020; font-weight: bold; }} .warn {{ color: #a15c00; }}
</style>
</head>
<body>
<h1>onnx-am reports</h1>
<p>{lead}. Each model's report is in its own folder; units are done/planned; "decoupled
helped": each method against standard AM on the same units (better beyond float noise,
median gain, units rescued from a trivial value) and the units it raised most.</p>
<table>
<thead>{head}</thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""


__all__ = ["render_overview"]
