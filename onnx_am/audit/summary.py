"""The report's answer to "where did the decoupled gradient help?".

Every method is compared with standard AM on the same units, from the results as
``report.json`` stores them: better / worse / tie counts, the median gain, and the units that
standard could not move off a trivial input but the method did ("rescued"). A ``best(B)``
result is the higher of a standard and a decoupled result of the same unit; the summary says
which one it picked instead of counting it as a method of its own.

It also counts the paper's failure mode, per method: results that are "white" (most input
elements pushed to the box's upper bound) or saturated (nearly all at either bound), and per
unit whether a method cleared or caused that against standard AM.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

#: Two activations within this relative distance are a tie (float noise, not a difference).
TIE_RTOL = 1e-3

#: A result is white when at least this share of its input elements is at the upper bound.
WHITE_SHARE = 0.5

#: A result is saturated when at least this share of its input elements is at either bound.
SATURATED_SHARE = 0.9


def is_white(entry: dict) -> bool:
    """Whether a result's input is mostly at the box's upper bound (a "white image")."""
    return (entry.get("white") or 0.0) >= WHITE_SHARE


def is_saturated(entry: dict) -> bool:
    """Whether nearly all of a result's input elements are at a bound of the box."""
    return (entry.get("saturation") or 0.0) >= SATURATED_SHARE


def is_tie(activation: float, standard: float, rtol: float = TIE_RTOL) -> bool:
    """Whether two activations are equal up to ``rtol`` of the larger magnitude."""
    return abs(activation - standard) <= rtol * max(abs(activation), abs(standard), 1e-12)


def summarize(entries: Sequence[dict], rtol: float = TIE_RTOL) -> dict:
    """Every non-standard method against standard AM, unit by unit.

    Args:
        entries: the ``results`` of ``report.json`` (``target``, ``method``, ``method_kind``,
            ``activation``, ``beats_trivial``, ``picked``).
        rtol: relative tolerance under which two activations tie.

    Returns:
        ``{"tie_rtol", "units", "methods": [...], "best": [...], "saturation": {...}}``.
        Each entry of ``methods`` has ``method``, ``units`` (compared with standard),
        ``better``, ``worse``, ``tie``, ``median_gain`` (``None`` without units),
        ``rescued`` (targets), and ``white_cleared`` / ``white_caused`` (targets whose
        standard result was white and this method's not, and the reverse). Each entry of
        ``best`` has ``method`` and ``picked`` (method label -> number of units where that
        method's result was the higher one). ``saturation`` has the thresholds
        (``white_share``, ``saturated_share``) and, per method in the order met (standard
        and best included), ``method``, ``kind``, ``results``, ``white`` and ``saturated``
        (counts of results).
    """
    standard = {e["target"]: e for e in entries if e.get("method_kind") == "standard"}
    methods: dict[str, list[dict]] = {}
    best: dict[str, list[dict]] = {}
    for entry in entries:
        kind = entry.get("method_kind")
        if kind == "standard":
            continue
        (best if kind == "best" else methods).setdefault(entry["method"], []).append(entry)
    return {
        "tie_rtol": rtol,
        "units": len({e["target"] for e in entries}),
        "methods": [_compare(label, rows, standard, rtol) for label, rows in methods.items()],
        "best": [_picks(label, rows) for label, rows in best.items()],
        "saturation": _saturation(entries),
    }


def _saturation(entries: Sequence[dict]) -> dict:
    counts: dict[str, dict] = {}
    for entry in entries:
        row = counts.setdefault(
            entry["method"],
            {
                "method": entry["method"],
                "kind": entry.get("method_kind"),
                "results": 0,
                "white": 0,
                "saturated": 0,
            },
        )
        row["results"] += 1
        row["white"] += is_white(entry)
        row["saturated"] += is_saturated(entry)
    return {
        "white_share": WHITE_SHARE,
        "saturated_share": SATURATED_SHARE,
        "methods": list(counts.values()),
    }


def _compare(label: str, rows: list[dict], standard: dict[str, dict], rtol: float) -> dict:
    better = worse = tie = 0
    gains, rescued, white_cleared, white_caused = [], [], [], []
    for row in rows:
        base = standard.get(row["target"])
        if base is None or row.get("activation") is None or base.get("activation") is None:
            continue
        gain = row["activation"] - base["activation"]
        gains.append(gain)
        if is_tie(row["activation"], base["activation"], rtol):
            tie += 1
        elif gain > 0:
            better += 1
        else:
            worse += 1
        if row.get("beats_trivial") and not base.get("beats_trivial"):
            rescued.append(row["target"])
        if is_white(base) != is_white(row):
            (white_caused if is_white(row) else white_cleared).append(row["target"])
    return {
        "method": label,
        "units": len(gains),
        "better": better,
        "worse": worse,
        "tie": tie,
        "median_gain": statistics.median(gains) if gains else None,
        "rescued": rescued,
        "white_cleared": white_cleared,
        "white_caused": white_caused,
    }


def _picks(label: str, rows: list[dict]) -> dict:
    picked: dict[str, int] = {}
    for row in rows:
        if row.get("picked"):
            picked[row["picked"]] = picked.get(row["picked"], 0) + 1
    return {"method": label, "units": len(rows), "picked": picked}


def summary_lines(summary: dict) -> list[str]:
    """One line per method for a terminal: ``decoupled(0.3) vs standard: better on ...``,
    then one line with the white / saturated counts per method."""
    lines = []
    for method in summary.get("methods", []):
        if not method["units"]:
            continue
        median = method["median_gain"]
        lines.append(
            f"{method['method']} vs standard on {method['units']} unit(s): better "
            f"{method['better']}, worse {method['worse']}, tie {method['tie']}"
            + (f"; median gain {median:.4g}" if median is not None else "")
            + (
                f"; rescued {len(method['rescued'])} unit(s) standard left at a trivial value"
                if method["rescued"]
                else ""
            )
            + _white_change(method)
        )
    saturation = summary.get("saturation")
    if saturation and saturation["methods"]:
        counts = "; ".join(
            f"{m['method']} {m['white']} white, {m['saturated']} saturated of {m['results']}"
            for m in saturation["methods"]
        )
        lines.append(
            f"white / saturated results (>= {saturation['white_share']:.0%} of the input at the "
            f"upper bound / >= {saturation['saturated_share']:.0%} at a bound): {counts}"
        )
    return lines


def _white_change(method: dict) -> str:
    cleared, caused = method.get("white_cleared") or [], method.get("white_caused") or []
    if not cleared and not caused:
        return ""
    return f"; white cleared on {len(cleared)}, caused on {len(caused)} unit(s)"
