"""Toy functions with known global maxima (``models/toy_*.onnx`` + ``models/toy_functions.json``).

For each toy model, every method of the plan maximizes its output from the plan's starts and
seeds; the table reports the share of the known global maximum reached.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

from benchmarks.am_quality_runs import Call, ModelCache, run_calls
from benchmarks.harness import MODELS, fmt_med, fmt_share, markdown_table

TOY_JSON = MODELS / "toy_functions.json"
_MAX_KEYS = ("global_max", "true_max", "known_max", "max", "maximum", "max_value")


def load_toys(toy_json: Path | None = None) -> list[dict]:
    """``[{name, path, target, true_max}]`` from ``toy_functions.json`` (empty if absent)."""
    toy_json = toy_json or TOY_JSON
    if not toy_json.exists():
        return []
    data = json.loads(toy_json.read_text())
    entries = data.get("functions", data.get("models", data))
    if isinstance(entries, dict):
        entries = [{"name": k, **v} for k, v in entries.items() if isinstance(v, dict)]
    toys = []
    for entry in entries:
        file = entry.get("file") or f"{entry['name']}.onnx"
        true_max = next((entry[k] for k in _MAX_KEYS if k in entry), None)
        if true_max is None or not (toy_json.parent / file).exists():
            continue
        toys.append(
            {
                "name": entry.get("name", file.removesuffix(".onnx")),
                "path": str(toy_json.parent / file),
                "target": entry.get("target"),
                "true_max": float(true_max),
            }
        )
    return toys


def run_toys(plan, log=print) -> tuple[list[dict], list[dict]]:
    """Run every toy; returns one row per (toy, start, method, seed) and the call timings."""
    toys = load_toys(Path(plan.toy_json) if plan.toy_json else None)
    if not toys:
        return [], []
    cache = ModelCache({t["name"]: t["path"] for t in toys})
    calls = []
    for toy in toys:
        target = toy["target"] or f"{cache(toy['name']).output_names[0]}:0"
        for start in plan.toy_starts:
            calls += [
                Call(
                    "toy",
                    toy["name"],
                    "converge",
                    [target],
                    {target: "toy"},
                    plan.toy_methods,
                    plan.steps,
                    plan.lr,
                    seed,
                    start,
                )
                for seed in plan.seeds
            ]
    started = time.perf_counter()
    records, timings = run_calls(calls, cache, log)
    maxima = {t["name"]: t["true_max"] for t in toys}
    rows = [
        {
            "toy": r.model,
            "start": r.start,
            "method": r.method,
            "seed": r.seed,
            "activation": r.activation,
            "true_max": maxima[r.model],
            "share": r.activation / maxima[r.model] if maxima[r.model] else float("nan"),
            "beats_trivial": r.beats_trivial,
        }
        for r in records
    ]
    log(f"  toys: {time.perf_counter() - started:.1f} s")
    return rows, timings


def toy_table(rows: list[dict]) -> str:
    """Per (toy, start, method): share of the true maximum (median [IQR]) and >= 99 % count."""
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        cells[(row["toy"], row["start"], row["method"])].append(row)
    table = []
    for (toy, start, method), group in cells.items():
        table.append(
            [
                toy,
                start,
                method,
                fmt_med([g["share"] for g in group]),
                fmt_share([g["share"] >= 0.99 for g in group]),
            ]
        )
    return markdown_table(["toy", "start", "method", "share of true max", ">= 99 %"], table)
