"""The report's answer to "where did the decoupled gradient help?".

Every method is compared with standard AM on the same units, from the results as
``report.json`` stores them: better / worse / tie counts, the median gain, and the units that
standard could not move off a trivial input but the method did ("rescued"). A ``best(B)``
result is the higher of a standard and a decoupled result of the same unit; the summary says
which one it picked instead of counting it as a method of its own.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

#: Two activations within this relative distance are a tie (float noise, not a difference).
TIE_RTOL = 1e-3


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
        ``{"tie_rtol", "units", "methods": [...], "best": [...]}``. Each entry of
        ``methods`` has ``method``, ``units`` (compared with standard), ``better``,
        ``worse``, ``tie``, ``median_gain`` (``None`` without units) and ``rescued``
        (targets). Each entry of ``best`` has ``method`` and ``picked`` (method label ->
        number of units where that method's result was the higher one).
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
    }


def _compare(label: str, rows: list[dict], standard: dict[str, dict], rtol: float) -> dict:
    better = worse = tie = 0
    gains, rescued = [], []
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
    return {
        "method": label,
        "units": len(gains),
        "better": better,
        "worse": worse,
        "tie": tie,
        "median_gain": statistics.median(gains) if gains else None,
        "rescued": rescued,
    }


def _picks(label: str, rows: list[dict]) -> dict:
    picked: dict[str, int] = {}
    for row in rows:
        if row.get("picked"):
            picked[row["picked"]] = picked.get(row["picked"], 0) + 1
    return {"method": label, "units": len(rows), "picked": picked}


def summary_lines(summary: dict) -> list[str]:
    """One line per method for a terminal: ``decoupled(0.3) vs standard: better on ...``."""
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
        )
    return lines
