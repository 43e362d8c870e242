"""Tables and plots of ``am_quality.py`` from the flat records of ``am_quality_runs``.

Normalization: every activation is divided by the best value known for its (model, unit):
the maximum over all methods, seeds, starts, learning rates and the long runs (true forward).
Units whose best known value is not positive (dead channels) are left out of normalized
statistics and counted separately.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.harness import fmt_med, fmt_share, markdown_table, median_iqr

Key = tuple[str, str]


def best_known(records: Sequence) -> dict[Key, float]:
    """(model, target) -> the largest true-forward activation seen in any record."""
    best: dict[Key, float] = {}
    for r in records:
        key = (r.model, r.target)
        best[key] = max(
            best.get(key, -np.inf), r.activation, float(np.max(r.trace, initial=-np.inf))
        )
    return best


def norm_trace(record, best: dict[Key, float]) -> np.ndarray | None:
    """The record's trace divided by its unit's best known value (None if that is <= 0)."""
    b = best[(record.model, record.target)]
    if not b > 0 or record.trace.size == 0:
        return None
    return record.trace / b


def at_budget(trace: np.ndarray, budget: int) -> float:
    """Best-so-far after ``budget`` steps (the last value if the trace is shorter).

    The engine's trace has ``steps + 1`` entries: entry 0 is the start, entry ``t`` the best
    true value among the points ``x_0 .. x_t``.
    """
    return float(trace[min(budget, trace.size - 1)])


def steps_to(trace: np.ndarray, level: float = 0.95) -> float:
    """First step whose normalized trace reaches ``level`` (0 = the start); ``inf`` if never."""
    hits = np.nonzero(trace >= level)[0]
    return float(hits[0]) if hits.size else float("inf")


def fmt_steps(values: Sequence[float]) -> str:
    """Share of rows that ever reach the level, and the median steps among those that do."""
    if not values:
        return "-"
    reached = [v for v in values if np.isfinite(v)]
    share = f"{100 * len(reached) / len(values):.0f} %"
    if not reached:
        return f"{share} reach"
    return f"{share} reach, median {median_iqr(reached)[0]:.0f} steps"


def group(records: Sequence, *fields: str) -> dict[tuple, list]:
    """Records grouped by the given attributes, in first-seen order."""
    out: dict[tuple, list] = defaultdict(list)
    for r in records:
        out[tuple(getattr(r, f) for f in fields)].append(r)
    return out


def method_order(records: Sequence) -> list[str]:
    """Methods in the order they first appear."""
    return list(dict.fromkeys(r.method for r in records))


def quality_table(records: Sequence, best: dict[Key, float], budgets: Sequence[int]) -> str:
    """Per method: normalized maximum at each budget, steps to 95 %, trivial failures, etc."""
    header = ["method", *(f"norm @{b}" for b in budgets), "reach 95 % of best known"]
    header += ["fails trivial"]
    header += ["saturation", "white"]
    rows = []
    for (method,), group_records in group(records, "method").items():
        traces = [t for t in (norm_trace(r, best) for r in group_records) if t is not None]
        row = [method, *(fmt_med([at_budget(t, b) for t in traces]) for b in budgets)]
        row.append(fmt_steps([steps_to(t) for t in traces]))
        row.append(fmt_share([not r.beats_trivial for r in group_records]))
        row.append(fmt_med([r.saturation for r in group_records], 2))
        row.append(fmt_med([r.white for r in group_records], 2))
        rows.append(row)
    return markdown_table(header, rows)


def per_model_table(records: Sequence, best: dict[Key, float], budget: int) -> str:
    """Median normalized maximum at ``budget`` steps: methods x models."""
    models = list(dict.fromkeys(r.model for r in records))
    cells = group(records, "method", "model")
    rows = []
    for method in method_order(records):
        row = [method]
        for model in models:
            traces = [norm_trace(r, best) for r in cells.get((method, model), [])]
            med, _, _ = median_iqr([at_budget(t, budget) for t in traces if t is not None])
            row.append(f"{med:.3f}" if np.isfinite(med) else "-")
        rows.append(row)
    return markdown_table(["method", *models], rows)


def paired_ratio(records: Sequence, reference: str, budget: int) -> dict[str, list[float]]:
    """Per method: activation / reference method's activation, paired by unit, seed, start."""
    traces = {}
    for r in records:
        traces[(r.model, r.target, r.seed, r.start, r.lr, r.method)] = r.trace
    ratios: dict[str, list[float]] = defaultdict(list)
    for key, trace in traces.items():
        ref = traces.get((*key[:5], reference))
        if ref is None:
            continue
        denom = at_budget(ref, budget)
        if denom > 1e-6:
            ratios[key[5]].append(at_budget(trace, budget) / denom)
    return ratios


def lr_table(records: Sequence, best: dict[Key, float], budgets: Sequence[int]) -> str:
    """Per model and learning rate: normalized maxima per method and the gain over standard."""
    header = [
        "model",
        "lr",
        "method",
        *(f"norm @{b}" for b in budgets),
        f"vs standard @{budgets[-1]}",
    ]
    rows = []
    for (model, lr), recs in sorted(group(records, "model", "lr").items(), key=lambda kv: kv[0][1]):
        ratios = paired_ratio(recs, "standard", budgets[-1])
        for (method,), mrecs in group(recs, "method").items():
            traces = [t for t in (norm_trace(r, best) for r in mrecs) if t is not None]
            row = [model, f"{lr:g} ({mrecs[0].regime})", method]
            row += [fmt_med([at_budget(t, b) for t in traces]) for b in budgets]
            row.append(fmt_med(ratios.get(method, []), 2))
            rows.append(row)
    return markdown_table(header, rows)


def lr_summary_table(records: Sequence, best: dict[Key, float], budget: int) -> str:
    """All lr-section models pooled: per lr and method, norm @budget and ratio to standard."""
    header = [
        "lr",
        "method",
        f"norm @{budget}",
        f"vs standard @{budget}",
        "vs standard, classes",
        "vs standard, channels",
    ]
    rows = []
    for (lr,), recs in sorted(group(records, "lr").items()):
        ratios = paired_ratio(recs, "standard", budget)
        by_kind = {
            k: paired_ratio([r for r in recs if r.unit_kind == k], "standard", budget)
            for k in ("class", "channel")
        }
        for (method,), mrecs in group(recs, "method").items():
            traces = [t for t in (norm_trace(r, best) for r in mrecs) if t is not None]
            rows.append(
                [
                    f"{lr:g} ({mrecs[0].regime})",
                    method,
                    fmt_med([at_budget(t, budget) for t in traces]),
                    fmt_med(ratios.get(method, []), 2),
                    fmt_med(by_kind["class"].get(method, []), 2),
                    fmt_med(by_kind["channel"].get(method, []), 2),
                ]
            )
    return markdown_table(header, rows)


def gain_table(records: Sequence, budgets: Sequence[int]) -> str:
    """Per unit kind and method: activation / standard's at each budget (paired, median [IQR])."""
    header = [
        "units",
        "method",
        *(f"vs standard @{b}" for b in budgets),
        f"better than standard @{budgets[-1]}",
    ]
    rows = []
    for kind in ("class", "channel"):
        recs = [r for r in records if r.unit_kind == kind]
        per_budget = {b: paired_ratio(recs, "standard", b) for b in budgets}
        for method in method_order(recs):
            if method == "standard":
                continue
            last = per_budget[budgets[-1]].get(method, [])
            rows.append(
                [
                    kind,
                    method,
                    *(fmt_med(per_budget[b].get(method, []), 2) for b in budgets),
                    fmt_share([v > 1.01 for v in last]),
                ]
            )
    return markdown_table(header, rows)


def hard_start_table(records: Sequence, best: dict[Key, float]) -> str:
    """Per start and method: how often the result beats the best trivial input, and its level."""
    header = ["start", "method", "escapes (beats trivial)", "norm @final", "activation > 0"]
    rows = []
    for (start, method), recs in group(records, "start", "method").items():
        traces = [t for t in (norm_trace(r, best) for r in recs) if t is not None]
        rows.append(
            [
                start,
                method,
                fmt_share([r.beats_trivial for r in recs]),
                fmt_med([t[-1] for t in traces]),
                fmt_share([r.activation > 1e-6 for r in recs]),
            ]
        )
    return markdown_table(header, rows)


def crosscheck_line(records: Sequence) -> str:
    """How many results onnxruntime confirmed, and the largest relative difference."""
    checked = [r for r in records if r.activation_ort is not None]
    if not checked:
        return "onnxruntime cross-check: not run"
    worst = max(abs(r.activation - r.activation_ort) / max(1.0, abs(r.activation)) for r in checked)
    agree = sum(r.agrees for r in checked)
    return (
        f"onnxruntime cross-check: {agree}/{len(checked)} results agree with the torch value "
        f"(largest relative difference {worst:.1e})"
    )


def median_curves(records: Sequence, best: dict[Key, float]) -> dict[str, np.ndarray]:
    """Per method, the median normalized best-so-far activation at each step."""
    curves = {}
    for (method,), recs in group(records, "method").items():
        traces = [t for t in (norm_trace(r, best) for r in recs) if t is not None]
        if traces:
            length = min(t.size for t in traces)
            curves[method] = np.median(np.stack([t[:length] for t in traces]), axis=0)
    return curves


def plot_curves(panels: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    """One panel per regime: median normalized activation vs step, one line per method.

    A method keeps its colour in every panel; standard and best are drawn thick.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(m for curves in panels.values() for m in curves))
    colours = {m: plt.get_cmap("tab20")(i % 20) for i, m in enumerate(methods)}
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.4 * columns, 4.0 * rows), squeeze=False)
    for ax, (title, curves) in zip(axes.flat, panels.items(), strict=False):
        for method, curve in curves.items():
            thick = method in ("standard", "best")
            ax.plot(
                np.arange(1, curve.size),
                curve[1:],
                "-" if thick or method.startswith("decoupled") else "--",
                color="black" if method == "standard" else colours[method],
                lw=2.6 if thick else 1.3,
                label=method,
            )
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("median activation / best known")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles = {
        m: h for ax in axes.flat for h, m in zip(*ax.get_legend_handles_labels(), strict=True)
    }
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=6, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def derived_records(records: Sequence, betas: Sequence[float], seeds: Sequence[int]) -> list:
    """Virtual methods from existing rows, to judge ``best`` fairly.

    - ``best(b)``: per unit and seed, the higher of standard and decoupled(b) (what the engine's
      ``best(b)`` reports; it costs two rows per unit);
    - ``standard x2`` / ``decoupled(0.3) x2``: the same two-row budget spent on a second seed
      of one method (seed s and seed s+1), the control for "best wins only by trying twice".
    """
    from dataclasses import replace

    index = {(r.model, r.target, r.seed, r.method): r for r in records}
    out = []
    for (model, target, seed, method), r in index.items():
        if method != "standard":
            continue
        for beta in betas:
            other = index.get((model, target, seed, f"decoupled({beta:g})"))
            if other is not None:
                out.append(_merge(replace, r, other, f"best({beta:g})"))
        nxt = seeds[(list(seeds).index(seed) + 1) % len(seeds)] if seed in seeds else None
        for base in ("standard", "decoupled(0.3)"):
            a = index.get((model, target, seed, base))
            b = index.get((model, target, nxt, base))
            if a is not None and b is not None and nxt != seed:
                out.append(_merge(replace, a, b, f"{base} x2"))
    return out


def _merge(replace, a, b, method: str):
    """A record whose trace is the elementwise max of two (best of both rows)."""
    winner = a if a.activation >= b.activation else b
    return replace(
        winner,
        seed=a.seed,
        method=method,
        activation=max(a.activation, b.activation),
        trace=np.maximum(a.trace, b.trace),
        beats_trivial=a.beats_trivial or b.beats_trivial,
    )


def cell_summaries(records: Sequence, best: dict[Key, float], budgets: Sequence[int]) -> list[dict]:
    """Compact JSON: per (section, model, lr, start, unit kind, method) medians and counts."""
    cells = []
    fields = ("section", "model", "lr", "start", "unit_kind", "method")
    for key, recs in group(records, *fields).items():
        traces = [t for t in (norm_trace(r, best) for r in recs) if t is not None]
        cell = dict(zip(fields, key, strict=True))
        cell["n"] = len(recs)
        for b in budgets:
            cell[f"norm_at_{b}"] = _round(median_iqr([at_budget(t, b) for t in traces]))
        cell["activation"] = _round(median_iqr([r.activation for r in recs]))
        cell["beats_trivial"] = sum(r.beats_trivial for r in recs)
        cell["saturation"] = _round(median_iqr([r.saturation for r in recs]))
        cell["white"] = _round(median_iqr([r.white for r in recs]))
        cell["onnxruntime_agrees"] = sum(r.agrees for r in recs)
        cells.append(cell)
    return cells


def _round(values: tuple[float, ...]) -> list[float | None]:
    return [round(v, 4) if np.isfinite(v) else None for v in values]
