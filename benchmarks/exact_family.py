"""Reach of the exact maximum on the known-answer family, at equal cost.

Every network of ``models/exact_family.json`` (32 small ReLU / LeakyReLU nets, 1-4 hidden
layers, exact maxima by MILP; see ``models/make_exact_family.py``) is maximized by each
configuration below. Every configuration spends the same number of rows (optimized inputs)
per network and the same steps per row, so they cost the same: one method runs ``--rows``
restarts (different starts); a portfolio runs one row per method from the same start and
counts the best of them, exactly as the ``best`` methods report it.
The table gives, per configuration and step budget, the share of networks on which the value
found reaches at least 0.99 of the exact maximum, and the median reach (value / maximum).

Starts are the engine's ``random`` start (box centre plus 10 % noise) unless a configuration
names ``screened`` (:mod:`onnx_am.engine.starts`): each restart first evaluates ``S`` random
corners with forward passes only and starts from the best. That is paid for at equal cost: a
forward counts as a third of a forward + backward step, so every row of a screened
configuration takes ``ceil(restarts * S / (3 * rows))`` fewer steps.

Run (from the repository root)::

    python -m benchmarks.exact_family [--steps 64 256] [--rows 3] [--seeds 0 1 2]
        [--configs NAME ...] [--only NETWORK ...]
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import time

import torch

from benchmarks.harness import (
    MODELS,
    command,
    machine_line,
    markdown_table,
    parser,
    raced,
    write_results,
)
from onnx_am import AMConfig, import_onnx, maximize
from onnx_am.engine.racing import RacingSettings
from onnx_am.engine.starts import screening_forwards

FAMILY = MODELS / "exact_family.json"
#: The step rules of ``onnx-am analyze --step-rule``.
STEP_RULES = {
    "normalized": {"optimizer": "pga", "normalize_grad": True},
    "raw": {"optimizer": "pga", "normalize_grad": False},
    "adam": {"optimizer": "adam", "normalize_grad": False},
}
PORTFOLIO = ["standard", "decoupled(0.3)", "decoupled(anneal(1.0))"]
#: A standard and a decoupled(0.3) row from each start (analyze's default until issue 15).
PAIRED = ["standard", "decoupled(0.3)"]
#: analyze's default: the decoupled row's beta falls from 0.3 to the forward slope over the run.
ANNEALED = ["standard", "decoupled(anneal(0.3))"]
#: A hedged start's (candidates, start) in a configuration tuple.
HEDGED = (384, "hedged")
#: name -> (step rule, lr schedule, one gradient method per row). Rows beyond the list repeat
#: its last method (with their own start seeds).
CONFIGS = {
    "standard": ("normalized", "constant", ["standard"]),
    "decoupled(0.3)": ("normalized", "constant", ["decoupled(0.3)"]),
    "decoupled(anneal(1.0))": ("normalized", "constant", ["decoupled(anneal(1.0))"]),
    "portfolio": ("normalized", "constant", PORTFOLIO),
    "standard, cosine": ("normalized", "cosine", ["standard"]),
    "decoupled(0.3), cosine": ("normalized", "cosine", ["decoupled(0.3)"]),
    "portfolio, cosine": ("normalized", "cosine", PORTFOLIO),
    "portfolio, restarts": ("normalized", "cosine-restarts", PORTFOLIO),
    "standard, adam": ("adam", "constant", ["standard"]),
    "portfolio, adam": ("adam", "constant", PORTFOLIO),
    "portfolio, adam cosine": ("adam", "cosine", PORTFOLIO),
    "standard, raw": ("raw", "constant", ["standard"]),
    "portfolio, raw": ("raw", "constant", PORTFOLIO),
}
#: Run only when asked for by ``--configs``: configurations that screened starts build on
#: (``standard, adam cosine`` is not in the default set), and those with ``S`` candidates per
#: restart: name -> (step rule, lr schedule, methods, candidates).
BASES = {
    **{
        name: CONFIGS[name]
        for name in (
            "standard",
            "standard, cosine",
            "decoupled(0.3), cosine",
            "portfolio",
            "portfolio, cosine",
            "portfolio, adam cosine",
        )
    },
    "standard, adam cosine": ("adam", "cosine", ["standard"]),
}
SCREENED = {
    f"{name}, screened {count}": (*setting, count)
    for name, setting in BASES.items()
    for count in (96, 192, 384, 576)
}
#: analyze's default, the pairing it replaced and candidates (use with ``--rows 6``: 3 starts
#: x 2 methods), and hedged starts (restart 0 random, later restarts screened): name -> (step
#: rule, lr schedule, methods[, candidates[, start]]).
DEFAULTS = {
    "standard + decoupled(0.3)": ("normalized", "constant", PAIRED),
    "standard + decoupled(0.3), cosine": ("normalized", "cosine", PAIRED),
    "standard + decoupled(0.3), adam cosine": ("adam", "cosine", PAIRED),
    "standard + decoupled(0.3), screened 384": ("normalized", "constant", PAIRED, 384),
    "standard + decoupled(0.3), hedged 384": ("normalized", "constant", PAIRED, *HEDGED),
    "standard + decoupled(0.3), adam cosine, hedged 384": ("adam", "cosine", PAIRED, *HEDGED),
    "standard + anneal(0.3)": ("normalized", "constant", ANNEALED),
    "standard + anneal(0.3), cosine": ("normalized", "cosine", ANNEALED),
    "standard + anneal(0.3), hedged 384": ("normalized", "constant", ANNEALED, *HEDGED),
    "standard + anneal(0.3), cosine, hedged 384": ("normalized", "cosine", ANNEALED, *HEDGED),
    "standard, hedged 384": ("normalized", "constant", ["standard"], *HEDGED),
}
#: Racing restarts (:mod:`onnx_am.engine.racing`) at the default's rows (use with ``--rows 6``):
#: the race pays for its screened pool itself, so no steps are taken off here.
RACING = {
    "standard + anneal(0.3), racing": (
        "normalized",
        "constant",
        ANNEALED,
        raced(corners=4),
    ),
    "standard + anneal(0.3), racing, cosine": (
        "normalized",
        "cosine",
        ANNEALED,
        raced(corners=4),
    ),
    "standard + anneal(0.3), racing 2 corners": (
        "normalized",
        "constant",
        ANNEALED,
        raced(corners=2),
    ),
    "standard + anneal(0.3), racing 16 candidates": (
        "normalized",
        "constant",
        ANNEALED,
        raced(candidates=16, corners=8, rungs=4, screen=128),
    ),
    "standard + anneal(0.3), racing 2 corners, cosine": (
        "normalized",
        "cosine",
        ANNEALED,
        raced(corners=2),
    ),
    "standard + anneal(0.3), racing 16 candidates, cosine": (
        "normalized",
        "cosine",
        ANNEALED,
        raced(candidates=16, corners=8, rungs=4, screen=128),
    ),
    "standard + anneal(0.3), racing 16 candidates, cosine, screen 384": (
        "normalized",
        "cosine",
        ANNEALED,
        raced(candidates=16, corners=8, rungs=4, screen=384),
    ),
    # round 5: one change at a time from 16 candidates, cosine
    "standard + anneal(0.3), racing 16 candidates 4 corners, cosine": (
        "normalized",
        "cosine",
        ANNEALED,
        raced(candidates=16, corners=4, rungs=4, screen=128),
    ),
    "standard + anneal(0.3), racing 12 candidates, cosine": (
        "normalized",
        "cosine",
        ANNEALED,
        raced(candidates=12, corners=6, rungs=4, screen=128),
    ),
    "standard + anneal(0.3), racing 16 candidates keep 1/3, cosine": (
        "normalized",
        "cosine",
        ANNEALED,
        raced(candidates=16, corners=8, keep=1 / 3, rungs=3, screen=128),
    ),
    "standard + anneal(0.3), racing 16 candidates, cosine settle 1": (
        "normalized",
        "cosine",
        ANNEALED,
        raced(candidates=16, corners=8, rungs=4, screen=128, settle=1),
    ),
    "standard + anneal(0.3), racing 16 candidates, cosine settle 2": (
        "normalized",
        "cosine",
        ANNEALED,
        raced(candidates=16, corners=8, rungs=4, screen=128, settle=2),
    ),
    "standard + anneal(0.3), racing 12 candidates, cosine settle 1": (
        "normalized",
        "cosine",
        ANNEALED,
        raced(candidates=12, corners=6, rungs=4, screen=128, settle=1),
    ),
    "standard + anneal(0.3), racing 16 candidates 4 corners, cosine settle 1": (
        "normalized",
        "cosine",
        ANNEALED,
        raced(candidates=16, corners=4, rungs=4, screen=128, settle=1),
    ),
    "standard + anneal(0.3), racing 16 candidates, cosine settle 1 first 8": (
        "normalized",
        "cosine",
        ANNEALED,
        raced(candidates=16, corners=8, rungs=4, screen=128, settle=1, first_steps=8),
    ),
    # RacingSettings() as it is now, with the plain run's constant lr (as `--racing` runs it)
    "standard + anneal(0.3), racing (defaults)": (
        "normalized",
        "constant",
        ANNEALED,
        RacingSettings(),
    ),
}
ALL_CONFIGS = {**CONFIGS, **BASES, **SCREENED, **DEFAULTS, **RACING}
SUCCESS = 0.99


def reach(imported, target: str, setting: tuple, rows: int, steps: int, seed: int = 0) -> float:
    """Best true value over ``rows`` rows, in one batched call: one method, ``rows`` restarts;
    or a portfolio, one row per method from the same start (``rows`` must equal its size).
    A screened start's forwards are paid for by fewer steps (see the module docstring)."""
    rule, schedule, methods, *screened = setting
    racing = screened.pop() if screened and isinstance(screened[-1], RacingSettings) else None
    restarts = rows // len(methods)
    screen = screened[0] if screened else 0
    kind = screened[1] if len(screened) > 1 else ("screened" if screen else "random")
    start = {"start": kind, "screen": screen} if screen else {"start": "random"}
    config = AMConfig.of(
        steps=steps - math.ceil(screening_forwards(kind, restarts, screen) / (3 * rows)),
        lr=0.1,
        seed=seed,
        restarts=restarts,
        **start,
        crosscheck=False,
        lr_schedule=schedule,
        lr_cycles=4,
        racing=racing,
        **STEP_RULES[rule],
    )
    found = maximize(imported, [target], methods, config)
    return max(result.activation for result in found.results)


def main(argv: list[str] | None = None) -> None:
    cli = parser(__doc__)
    cli.add_argument("--steps", type=int, nargs="+", default=[64, 256])
    cli.add_argument("--rows", type=int, default=3, help="rows (optimized inputs) per network")
    cli.add_argument("--only", nargs="*", help="run only these networks (names)")
    cli.add_argument("--seeds", type=int, nargs="+", default=[0], help="start seeds")
    cli.add_argument(
        "--configs",
        nargs="+",
        choices=list(ALL_CONFIGS),
        metavar="NAME",
        help=f"configurations to run (default: {' '.join(repr(c) for c in CONFIGS)}; also "
        "'standard, adam cosine' and 'NAME, screened S' for S in 96, 192, 384, 576)",
    )
    args = cli.parse_args(argv)
    torch.set_num_threads(args.threads)
    family = json.loads(FAMILY.read_text())["networks"]
    names = args.only or list(family)
    configs = {name: ALL_CONFIGS[name] for name in (args.configs or CONFIGS)}
    records = []
    started = time.perf_counter()
    for name in names:
        entry = family[name]
        imported = import_onnx(MODELS / entry["file"])
        print(f"{name} ({time.perf_counter() - started:.0f} s)", flush=True)
        for steps, (config, setting), seed in itertools.product(
            args.steps, configs.items(), args.seeds
        ):
            value = reach(imported, entry["target"], setting, args.rows, steps, seed)
            records.append(
                {
                    "network": name,
                    "kind": entry["kind"],
                    "steps": steps,
                    "config": config,
                    "seed": seed,
                    "value": value,
                    "max": entry["max"],
                    "reach": value / entry["max"],
                }
            )
    elapsed = time.perf_counter() - started
    text = _report(records, list(configs), args, elapsed)
    stem = "exact_family" if args.rows == 3 else f"exact_family_rows{args.rows}"
    write_results(args.out, stem, text, {"records": records})
    print(text)


def _report(records: list[dict], configs: list[str], args, elapsed: float) -> str:
    rows = []
    for steps in args.steps:
        for config in configs:
            mine = [r for r in records if r["steps"] == steps and r["config"] == config]
            reached = [r["reach"] >= SUCCESS for r in mine]
            failed = sorted({r["kind"] for r in mine if r["reach"] < SUCCESS})
            rows.append(
                [
                    steps,
                    config,
                    f"{sum(reached)}/{len(reached)} ({100 * sum(reached) / len(reached):.0f} %)",
                    f"{statistics.median(r['reach'] for r in mine):.3f}",
                    f"{min(r['reach'] for r in mine):.3f}",
                    ", ".join(failed) or "-",
                ]
            )
    kinds = {}
    for record in records:
        kinds.setdefault(record["kind"], set()).add(record["network"])
    options = [
        "--steps " + " ".join(map(str, args.steps)),
        f"--rows {args.rows}",
        "--seeds " + " ".join(map(str, args.seeds)),
        "--configs " + " ".join(f"'{c}'" for c in configs) if args.configs else "",
    ]
    seeds = len(args.seeds)
    lines = [
        "# Exact-maximum family: reach at equal cost",
        "",
        f"`{command('exact_family', *options)}` — {machine_line()}; {elapsed:.0f} s.",
        "",
        f"{len({r['network'] for r in records})} networks "
        f"({', '.join(f'{k}: {len(v)}' for k, v in kinds.items())}) x {seeds} start seed(s); "
        f"{args.rows} rows per network for every configuration, lr 0.1 (schedules decay to "
        "0.05 x lr; restarts: 4 cosine cycles). Starts near the box centre (mid + 10 % noise), "
        "except `screened S`: each restart starts from the best of S random corners, evaluated "
        "by forward passes only and paid for by ceil(restarts x S / (3 x rows)) fewer steps "
        f"per row. Success: value >= {SUCCESS} x the exact maximum, counted over networks x "
        "seeds.",
        "",
        markdown_table(
            ["steps", "configuration", "success", "median reach", "worst", "kinds that fail"],
            rows,
        ),
        "",
        f"Per network at {args.steps[-1]} steps: reach (value / exact maximum), median over seeds.",
        "",
        _per_network(records, configs, args.steps[-1]),
    ]
    return "\n".join(lines)


def _per_network(records: list[dict], configs: list[str], steps: int) -> str:
    reach: dict[tuple[str, str], list[float]] = {}
    for r in records:
        if r["steps"] == steps:
            reach.setdefault((r["network"], r["config"]), []).append(r["reach"])
    networks = list(dict.fromkeys(r["network"] for r in records))
    rows = [
        [name, *(f"{statistics.median(reach[(name, c)]):.2f}" for c in configs)]
        for name in networks
    ]
    return markdown_table(["network", *configs], rows)


if __name__ == "__main__":
    main()
