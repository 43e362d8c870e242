"""AM-quality benchmark: standard vs decoupled vs proxy rectifier gradients on the sample models.

Measures, on the digits CNNs (``models/digits_*.onnx``, ``models/keras_digits.onnx``) and
the toy functions with known maxima (``models/toy_*.onnx``), the maximum reached (true
forward, recomputed by onnxruntime) per gradient method at step budgets 16 / 64 / 256, the
steps to 95 % of the best known value, saturation / white fraction, how often a method fails
to beat a trivial input, two learning-rate regimes, and hard starts (lower, mid, dead).

Run (from the repository root)::

    python -m benchmarks.am_quality           # full run, ~5-8 min on 2 CPU cores (1 torch thread)
    python -m benchmarks.am_quality --quick   # small grid, ~15 s

Writes ``benchmarks/results/am_quality.md``, ``am_quality.json`` and ``am_quality_curves.png``
(``am_quality_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from benchmarks import am_quality_report as rep
from benchmarks import am_quality_toys as toys
from benchmarks.am_quality_runs import (
    Call,
    ModelCache,
    Record,
    method_key,
    run_calls,
    unit_targets,
)
from benchmarks.harness import (
    RESULTS,
    available,
    command,
    machine,
    machine_line,
    model_path,
    parser,
    write_json,
    write_results,
)

DIGITS = [
    "digits_relu",
    "digits_leaky001",
    "digits_leaky02",
    "digits_relu_bn",
    "digits_prelu",
    "digits_deep_relu",
    "keras_digits",
]
BETAS = (0.01, 0.1, 0.3, 0.6, 1.0)
FOCUS = ["standard", "decoupled(0.3)", "proxy(0.3)", "decoupled(anneal(1.0))", "best"]


@dataclass
class Plan:
    """What to run. ``full()`` and ``quick()`` are the two presets; tests build tiny ones."""

    name: str
    models: list[str]
    methods: list[str]
    seeds: list[int]
    steps: int
    lr: float
    budgets: list[int]
    n_classes: int = 10
    n_channels: int = 8
    lr_models: list[str] = field(default_factory=list)
    lr_values: list[float] = field(default_factory=lambda: [0.002, 0.01, 1.0])
    lr_methods: list[str] = field(default_factory=lambda: list(FOCUS))
    hard_models: list[str] = field(default_factory=list)
    hard_starts: list[str] = field(default_factory=lambda: ["lower", "mid", "dead"])
    hard_methods: list[str] = field(default_factory=lambda: list(FOCUS))
    long_steps: int = 1024
    long_methods: list[str] = field(
        default_factory=lambda: ["standard", "decoupled(0.3)", "proxy(0.3)"]
    )
    toy_methods: list[str] = field(default_factory=lambda: list(FOCUS))
    toy_starts: list[str] = field(default_factory=lambda: ["random", "dead"])
    batch_size: int = 256
    model_dir: str | None = None
    toy_json: str | None = None
    notes: list[str] = field(default_factory=list)

    def path(self, model: str) -> str:
        """``<model_dir>/<model>.onnx`` (default folder: ``models/``)."""
        return (
            str(Path(self.model_dir) / f"{model}.onnx")
            if self.model_dir
            else str(model_path(model))
        )

    @classmethod
    def full(cls) -> Plan:
        methods = ["standard", *(f"decoupled({b:g})" for b in BETAS)]
        methods += ["proxy(0.1)", "proxy(0.3)", "proxy(1)"]
        methods += ["decoupled(anneal(1.0))", "proxy(anneal(1.0))", "best"]
        models = available(DIGITS)
        return cls(
            name="am_quality",
            models=models,
            methods=methods,
            seeds=[0, 1, 2],
            steps=256,
            lr=0.1,
            budgets=[16, 64, 256],
            lr_models=[m for m in models if m != "keras_digits"],
            hard_models=models,
            notes=[
                "grid reduced to stay near 10 minutes on 2 cores: proxy runs beta in {0.1, 0.3, 1} "
                "only (decoupled all five betas); the lr sweep, hard starts and 1024-step long "
                "runs use seed 0 and the focus methods "
                f"{', '.join(FOCUS)}; `best` = standard and decoupled(0.3) run together, per unit "
                "the higher true value (it shares their rows, so it costs nothing extra).",
            ],
        )

    @classmethod
    def quick(cls) -> Plan:
        models = available(["digits_relu", "digits_deep_relu"])
        return cls(
            name="am_quality_quick",
            models=models,
            methods=["standard", "decoupled(0.1)", "decoupled(0.3)", "proxy(0.3)", "best"],
            seeds=[0],
            steps=64,
            lr=0.1,
            budgets=[16, 64],
            n_channels=4,
            lr_models=models[:1],
            lr_values=[0.002],
            lr_methods=["standard", "decoupled(0.3)"],
            hard_models=models[:1],
            hard_starts=["dead"],
            hard_methods=["standard", "decoupled(0.3)"],
            long_steps=128,
            long_methods=["decoupled(0.3)"],
            toy_methods=["standard", "decoupled(0.3)"],
            toy_starts=["dead"],
            notes=[
                "--quick: 2 models, 5 methods, 1 seed, 64 steps, 4 channels, lr sweep 0.002 only."
            ],
        )


def regime(lr: float, converging: float) -> str:
    """``converging`` for the plan's lr, else ``too small`` / ``large``."""
    if lr == converging:
        return "converging"
    return "too small" if lr < converging else "large"


def build_calls(plan: Plan, cache: ModelCache) -> list[Call]:
    """All engine calls of the plan, one per (section, model, lr, start, seed)."""
    calls = []
    for model in plan.models:
        targets, kinds = unit_targets(cache(model), plan.n_classes, plan.n_channels)
        seed0 = plan.seeds[0]
        # (section, methods, seed, steps, lr, start)
        specs = [("grid", plan.methods, s, plan.steps, plan.lr, "random") for s in plan.seeds]
        if model in plan.lr_models:
            specs += [
                ("lr", plan.lr_methods, seed0, plan.steps, lr, "random") for lr in plan.lr_values
            ]
        if model in plan.hard_models:
            specs += [
                ("hard", plan.hard_methods, seed0, plan.steps, plan.lr, s) for s in plan.hard_starts
            ]
        specs.append(("long", plan.long_methods, seed0, plan.long_steps, plan.lr, "random"))
        for section, methods, seed, steps, lr, start in specs:
            calls.append(
                Call(
                    section,
                    model,
                    regime(lr, plan.lr),
                    targets,
                    kinds,
                    methods,
                    steps,
                    lr,
                    seed,
                    start,
                )
            )
    return calls


def _keys(methods: list[str]) -> set[str]:
    return {method_key(m) for m in methods}


def render(
    plan: Plan, records: list[Record], toy_rows: list[dict], info: dict, timings: list[dict]
) -> str:
    """The markdown report."""
    best = rep.best_known(records)
    grid = [r for r in records if r.section == "grid"]
    lr_models = {r.model for r in records if r.section == "lr"}
    lr_recs = [r for r in records if r.section == "lr"]
    lr_recs += [
        r
        for r in grid
        if r.model in lr_models and r.method in _keys(plan.lr_methods) and r.seed == plan.seeds[0]
    ]
    hard = [r for r in records if r.section == "hard"]
    hard += [
        r
        for r in grid
        if r.model in plan.hard_models
        and r.method in _keys(plan.hard_methods)
        and r.seed == plan.seeds[0]
    ]
    deep = [r for r in grid if "deep" in r.model]
    long_runs = [r for r in records if r.section == "long"]
    derived = rep.derived_records(grid, BETAS, plan.seeds) if len(plan.seeds) > 1 else []
    dead_units = sorted(f"{m} {t}" for (m, t), v in best.items() if not v > 0)
    total = sum(t["seconds"] for t in timings)
    b0, b1 = plan.budgets[0], plan.budgets[-1]
    out = [
        f"# AM quality benchmark ({plan.name})",
        "",
        machine_line(info),
        "",
        f"Command: `{command('am_quality', '--quick' if 'quick' in plan.name else '')}` "
        f"({total / 60:.1f} min in {len(timings)} engine calls, {len(records)} results; "
        f"torch threads {info['torch_threads']}; load average at start "
        f"{info.get('load_start', '?')}, at end {info.get('load_end', '?')}).",
        "",
        f"Settings: projected gradient ascent on the raw gradient (the paper's), input domain "
        f"[-1, 1], lr {plan.lr:g}, {plan.steps} steps, 1 restart per seed, seeds {plan.seeds}, "
        f"small random start (mid + U(-0.1, 0.1)) unless stated. Units per model: "
        f"{plan.n_classes} classes of the output + {plan.n_channels} evenly spaced channels "
        "(spatial mean) of the last convolutional rectifier.",
        "",
        "`norm @b` = best-so-far true-forward activation after b steps divided by the best value "
        "known for that unit (max over all methods, seeds, starts, lrs and the "
        f"{plan.long_steps}-step long runs); median [25th, 75th percentile] over units x seeds. "
        "With a fixed lr, the value at budget b equals a run of b steps. `vs standard` = "
        "activation / standard's activation for the same unit, seed and start (paired). "
        "`fails trivial` = the result does not beat the best trivial input (all-upper, all-lower, "
        "mid, best of 16 random corners).",
        "",
        *(f"- {note}" for note in plan.notes),
        f"- units with best known value <= 0 (left out of normalized columns): "
        f"{', '.join(dead_units) if dead_units else 'none'}",
        f"- {rep.crosscheck_line(records)}",
        "",
        "## 1. All models pooled, random start",
        "",
        rep.quality_table(grid, best, plan.budgets),
        "",
        "## 2. Gain over standard, paired (all models pooled, random start)",
        "",
        rep.gain_table(grid, plan.budgets),
        "",
        "## 2b. Two rows per unit: `best(b)` vs a second seed of one method",
        "",
        "Derived from the rows above (no extra runs): `best(b)` = per unit and seed the higher "
        "of standard and decoupled(b), as the engine's `best(b)` reports; `x2` = the same "
        "two-row cost spent on seeds s and s+1 of one method (the control for 'best wins only "
        "because it tries twice').",
        "",
        rep.quality_table(derived, best, plan.budgets) if derived else "(needs 2 seeds)",
        "",
        rep.gain_table(derived + [r for r in grid if r.method == "standard"], plan.budgets)
        if derived
        else "",
        "",
        f"## 3. Per model: median norm @{b0} steps",
        "",
        rep.per_model_table(grid, best, b0),
        "",
        f"## 4. Per model: median norm @{b1} steps",
        "",
        rep.per_model_table(grid, best, b1),
        "",
        "## 5. Deep model (digits_deep_relu, 10 ReLU layers), random start",
        "",
        rep.quality_table(deep, best, plan.budgets) if deep else "(not run)",
        "",
        f"## 5b. Long runs: {plan.long_steps} steps (lr {plan.lr:g}, seed {plan.seeds[0]})",
        "",
        rep.quality_table(long_runs, best, [*plan.budgets, plan.long_steps]) if long_runs else "",
        "",
        f"## 6. Learning-rate regimes (models pooled, seed {plan.seeds[0]})",
        "",
        rep.lr_summary_table(lr_recs, best, b1) if lr_recs else "(not run)",
        "",
        "Per model:",
        "",
        rep.lr_table(lr_recs, best, plan.budgets) if lr_recs else "(not run)",
        "",
        f"## 7. Hard starts (all models pooled, lr {plan.lr:g}, seed {plan.seeds[0]})",
        "",
        rep.hard_start_table(hard, best) if hard else "(not run)",
        "",
        "## 8. Toy functions with known global maxima",
        "",
        toys.toy_table(toy_rows)
        if toy_rows
        else "(no models/toy_*.onnx with models/toy_functions.json)",
        "",
        "Plot: " + ", ".join(f"`{p}`" for p in plot_names(plan)),
        "",
    ]
    return "\n".join(out)


def plot_names(plan: Plan) -> list[str]:
    return [f"{plan.name}_curves.png"]


def make_plots(plan: Plan, records: list[Record], out_dir: Path) -> None:
    """Median normalized activation vs step per method, one panel per regime."""
    best = rep.best_known(records)
    grid = [r for r in records if r.section == "grid"]
    panels = {f"random start, lr {plan.lr:g}, all models": rep.median_curves(grid, best)}
    for lr in sorted(v for v in plan.lr_values if v < plan.lr):
        recs = [r for r in records if r.section == "lr" and r.lr == lr]
        panels[f"random start, lr {lr:g} (too small)"] = rep.median_curves(recs, best)
    dead = [r for r in records if r.section == "hard" and r.start == "dead"]
    panels[f"dead start, lr {plan.lr:g}"] = rep.median_curves(dead, best)
    deep = [r for r in grid if "deep" in r.model]
    panels["digits_deep_relu, random start"] = rep.median_curves(deep, best)
    panels = {k: v for k, v in panels.items() if v}
    if panels:
        rep.plot_curves(panels, out_dir / plot_names(plan)[0])


def run(
    plan: Plan, out_dir: Path = RESULTS, log=print, threads: int = 1
) -> tuple[str, list[Record]]:
    """Run the plan, write the markdown / JSON / PNG; return the markdown and the records.

    ``threads`` torch intra-op threads (default 1: on a shared 2-core machine, spinning
    OpenMP threads made 2-thread runs 5-20x slower than 1 thread for these small batches).
    """
    torch.set_num_threads(threads)
    info = machine()
    info["load_start"] = _load()
    log(machine_line(info))
    cache = ModelCache({m: plan.path(m) for m in plan.models})
    started = time.perf_counter()
    calls = build_calls(plan, cache)
    log(f"{len(calls)} engine calls")
    records, timings = run_calls(calls, cache, log, batch_size=plan.batch_size)
    toy_rows, toy_timings = toys.run_toys(plan, log)
    timings += toy_timings
    info["load_end"] = _load()
    text = render(plan, records, toy_rows, info, timings)
    write_results(out_dir, plan.name, text)
    make_plots(plan, records, out_dir)
    write_json(out_dir / f"{plan.name}.json", summary_json(plan, records, toy_rows, info, timings))
    log(f"total {time.perf_counter() - started:.0f} s")
    return text, records


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


def summary_json(
    plan: Plan, records: list[Record], toy_rows: list[dict], info: dict, timings
) -> dict:
    """Everything except the full traces (median curves instead)."""
    best = rep.best_known(records)
    grid = [r for r in records if r.section == "grid"]
    curves = rep.median_curves(grid, best)
    return {
        "machine": info,
        "plan": asdict(plan),
        "timings": timings,
        "best_known": {f"{m}|{t}": round(v, 5) for (m, t), v in best.items()},
        "cells": rep.cell_summaries(records, best, plan.budgets),
        "median_curves_grid": {k: [round(float(x), 5) for x in v] for k, v in curves.items()},
        "toys": toy_rows,
    }


def main(argv: list[str] | None = None) -> None:
    options = parser(__doc__)
    options.add_argument("--quick", action="store_true", help="small grid (~15 s)")
    args = options.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan.full()
    text, _ = run(plan, args.out, threads=args.threads)
    print(text)


if __name__ == "__main__":
    main()
