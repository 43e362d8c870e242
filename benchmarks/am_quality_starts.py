"""Starts and defaults on the trained CNNs, compute-matched: every configuration of a table
spends the same rows per unit.

The digits CNNs of ``models/`` (10 classes + 8 channels of the last convolutional rectifier
each, as in ``am_quality``) are maximized by each configuration at the same cost: the same
rows (optimized inputs) per unit and the same row-steps. ``--rows 3`` (default) compares start
settings at 3 rows against ``standard x3``; ``--rows 6`` compares ``analyze``'s default
(``standard + anneal(0.3)``: a standard and a ``decoupled(anneal(0.3))`` row from each of 3
starts, ``best`` = the higher), the ``standard + decoupled(0.3)`` pairing it replaced, and
other candidates against ``standard x6``. A ``screened`` start spends forward passes before
the first step (a forward costs about a third of a forward + backward step); its rows take
``ceil(forwards / (3 * rows))`` fewer steps, charged as if the pool served one unit only (it
serves every unit of the run, so this overcharges it). A ``hedged`` start screens every
restart but the first.

Reported per configuration: the median share of the best value known for the unit (the
maximum over every configuration and seed here), per target kind; how many units end below
the same-cost baseline (``standard x3``: three standard restarts from the default start) and
the worst ratio to it; how many fail to beat a trivial input.

Run (from the repository root)::

    python -m benchmarks.am_quality_starts [--models digits_relu ...] [--seeds 0 1] [--rows 6]
"""

from __future__ import annotations

import math
import statistics
import time

import torch

from benchmarks.am_quality import DIGITS
from benchmarks.am_quality_runs import unit_targets
from benchmarks.harness import (
    available,
    command,
    machine_line,
    markdown_table,
    model_path,
    parser,
    raced,
    write_results,
)
from onnx_am import AMConfig, import_onnx, maximize
from onnx_am.engine.racing import RacingSettings
from onnx_am.engine.starts import screening_forwards

NORMALIZED = {"optimizer": "pga", "normalize_grad": True}
ADAM = {"optimizer": "adam", "normalize_grad": False}
#: name -> (methods, restarts, settings); 3 rows per unit each.
PLAIN = {
    "standard x3": (["standard"], 3, NORMALIZED),
    "standard x3, cosine": (["standard"], 3, {**NORMALIZED, "lr_schedule": "cosine"}),
    "standard x3, adam cosine": (["standard"], 3, {**ADAM, "lr_schedule": "cosine"}),
    "portfolio": (["portfolio"], 1, NORMALIZED),
    "portfolio, cosine": (["portfolio"], 1, {**NORMALIZED, "lr_schedule": "cosine"}),
    "portfolio, adam cosine": (["portfolio"], 1, {**ADAM, "lr_schedule": "cosine"}),
}
#: Each plain configuration with a screened start of 96 or 384 candidates per restart.
THREE = {
    **PLAIN,
    **{
        f"{name}, screened {count}": (
            methods,
            restarts,
            {**settings, "start": "screened", "screen": count},
        )
        for name, (methods, restarts, settings) in PLAIN.items()
        for count in (96, 384)
    },
}
#: A standard and a decoupled(0.3) row from each start (analyze's default until issue 15).
PAIRED = ["standard", "decoupled(0.3)"]
#: analyze's default: the decoupled row's beta falls from 0.3 to the forward slope over the run.
ANNEALED = ["standard", "decoupled(anneal(0.3))"]
SCREENED = {"start": "screened", "screen": 384}
HEDGED = {"start": "hedged", "screen": 384}
COSINE = {**NORMALIZED, "lr_schedule": "cosine"}
ADAM_COSINE = {**ADAM, "lr_schedule": "cosine"}
#: Six rows per unit: analyze's default, the pairing it replaced, and candidates.
SIX = {
    "standard x6": (["standard"], 6, NORMALIZED),
    "standard + decoupled(0.3)": (PAIRED, 3, NORMALIZED),
    "standard + decoupled(0.3), cosine": (PAIRED, 3, COSINE),
    "standard + decoupled(0.3), adam cosine": (PAIRED, 3, ADAM_COSINE),
    "standard + decoupled(0.3), screened 384": (PAIRED, 3, {**NORMALIZED, **SCREENED}),
    "standard + decoupled(0.3), hedged 384": (PAIRED, 3, {**NORMALIZED, **HEDGED}),
    "standard + decoupled(0.3), adam cosine, hedged 384": (PAIRED, 3, {**ADAM_COSINE, **HEDGED}),
    "standard + anneal(0.3)": (ANNEALED, 3, NORMALIZED),
    "standard + anneal(0.3), cosine": (ANNEALED, 3, COSINE),
    "standard + anneal(0.3), hedged 384": (ANNEALED, 3, {**NORMALIZED, **HEDGED}),
    "standard + anneal(0.3), cosine, hedged 384": (ANNEALED, 3, {**COSINE, **HEDGED}),
    "standard x6, hedged 384": (["standard"], 6, {**NORMALIZED, **HEDGED}),
    # racing restarts (onnx_am.engine.racing): the race pays for its screened pool itself
    "standard + anneal(0.3), racing": (
        ANNEALED,
        3,
        {**NORMALIZED, "racing": raced(corners=4)},
    ),
    "standard + anneal(0.3), racing, cosine": (
        ANNEALED,
        3,
        {**COSINE, "racing": raced(corners=4)},
    ),
    "standard + anneal(0.3), racing 2 corners": (
        ANNEALED,
        3,
        {**NORMALIZED, "racing": raced(corners=2)},
    ),
    "standard + anneal(0.3), racing 16 candidates": (
        ANNEALED,
        3,
        {**NORMALIZED, "racing": raced(candidates=16, corners=8, rungs=4, screen=128)},
    ),
    "standard + anneal(0.3), racing 2 corners, cosine": (
        ANNEALED,
        3,
        {**COSINE, "racing": raced(corners=2)},
    ),
    "standard + anneal(0.3), racing 16 candidates, cosine": (
        ANNEALED,
        3,
        {**COSINE, "racing": raced(candidates=16, corners=8, rungs=4, screen=128)},
    ),
    "standard + anneal(0.3), racing 16 candidates, cosine, screen 384": (
        ANNEALED,
        3,
        {**COSINE, "racing": raced(candidates=16, corners=8, rungs=4, screen=384)},
    ),
    # round 5: one change at a time from 16 candidates, cosine
    "standard + anneal(0.3), racing 16 candidates 4 corners, cosine": (
        ANNEALED,
        3,
        {**COSINE, "racing": raced(candidates=16, corners=4, rungs=4, screen=128)},
    ),
    "standard + anneal(0.3), racing 12 candidates, cosine": (
        ANNEALED,
        3,
        {**COSINE, "racing": raced(candidates=12, corners=6, rungs=4, screen=128)},
    ),
    "standard + anneal(0.3), racing 16 candidates keep 1/3, cosine": (
        ANNEALED,
        3,
        {
            **COSINE,
            "racing": raced(candidates=16, corners=8, keep=1 / 3, rungs=3, screen=128),
        },
    ),
    "standard + anneal(0.3), racing 16 candidates, cosine settle 1": (
        ANNEALED,
        3,
        {
            **COSINE,
            "racing": raced(candidates=16, corners=8, rungs=4, screen=128, settle=1),
        },
    ),
    "standard + anneal(0.3), racing 16 candidates, cosine settle 2": (
        ANNEALED,
        3,
        {
            **COSINE,
            "racing": raced(candidates=16, corners=8, rungs=4, screen=128, settle=2),
        },
    ),
    "standard + anneal(0.3), racing 12 candidates, cosine settle 1": (
        ANNEALED,
        3,
        {
            **COSINE,
            "racing": raced(candidates=12, corners=6, rungs=4, screen=128, settle=1),
        },
    ),
    "standard + anneal(0.3), racing 16 candidates 4 corners, cosine settle 1": (
        ANNEALED,
        3,
        {
            **COSINE,
            "racing": raced(candidates=16, corners=4, rungs=4, screen=128, settle=1),
        },
    ),
    "standard + anneal(0.3), racing 16 candidates, cosine settle 1 first 8": (
        ANNEALED,
        3,
        {
            **COSINE,
            "racing": raced(candidates=16, corners=8, rungs=4, screen=128, settle=1, first_steps=8),
        },
    ),
    # RacingSettings() as it is now, with the plain run's constant lr (as `--racing` runs it)
    "standard + anneal(0.3), racing (defaults)": (
        ANNEALED,
        3,
        {**NORMALIZED, "racing": RacingSettings()},
    ),
}
#: Run with ``--rows 6`` unless ``--configs`` says otherwise.
SIX_DEFAULT = [
    "standard + decoupled(0.3)",
    "standard + anneal(0.3)",
    "standard + anneal(0.3), hedged 384",
    "standard + decoupled(0.3), adam cosine, hedged 384",
]
TABLES = {3: THREE, 6: SIX}
CONFIGS = {**THREE, **SIX}
BASELINES = {3: "standard x3", 6: "standard x6"}
#: analyze's plain default: with ``--rows 6`` in the run, every configuration is also compared
#: with its standard rows (the paper's baseline: no configuration should end below it).
DEFAULT = "standard + anneal(0.3)"


def run_config(
    imported, targets: list[str], name: str, steps: int, seed: int, rows: int
) -> tuple[list[float], list[float], list[float]]:
    """Per target: the best value of the configuration's rows, the best of its standard rows
    (-inf without them) and the best trivial input."""
    methods, restarts, settings = CONFIGS[name]
    forwards = screening_forwards(
        settings.get("start", "random"), restarts, settings.get("screen", 0)
    )
    config = AMConfig.of(
        **settings,
        steps=steps - math.ceil(forwards / (3 * rows)),
        lr=0.1,
        restarts=restarts,
        seed=seed,
        crosscheck=False,
    )
    report = maximize(imported, targets, methods, config)
    best: dict[str, float] = {}  # per target, over its methods (the default has two)
    standard = dict.fromkeys(targets, -math.inf)
    for result in report.results:
        name = result.target.name
        best[name] = max(best.get(name, -math.inf), result.activation)
        if result.method_kind == "standard":
            standard[name] = max(standard[name], result.activation)
    return list(best.values()), list(standard.values()), [b.best for b in report.baselines]


def main(argv: list[str] | None = None) -> None:
    cli = parser(__doc__)
    cli.add_argument("--models", nargs="+", default=DIGITS)
    cli.add_argument("--seeds", type=int, nargs="+", default=[0])
    cli.add_argument("--steps", type=int, default=256)
    cli.add_argument("--rows", type=int, choices=sorted(TABLES), default=3)
    cli.add_argument("--configs", nargs="+", choices=list(CONFIGS), metavar="NAME")
    args = cli.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = TABLES[args.rows]
    asked = args.configs or list(PLAIN if args.rows == 3 else SIX_DEFAULT)
    if unknown := [name for name in asked if name not in table]:
        cli.error(f"not a {args.rows}-row configuration: {', '.join(unknown)}")
    configs = list(dict.fromkeys([BASELINES[args.rows], *asked]))
    records = []
    started = time.perf_counter()
    for model in available(args.models):
        imported = import_onnx(model_path(model))
        targets, kinds = unit_targets(imported, 10, 8)
        print(f"{model} ({time.perf_counter() - started:.0f} s)", flush=True)
        for seed in args.seeds:
            for name in configs:
                values, standard, trivial = run_config(
                    imported, targets, name, args.steps, seed, args.rows
                )
                for target, value, plain, bar in zip(
                    targets, values, standard, trivial, strict=True
                ):
                    records.append(
                        {
                            "model": model,
                            "target": target,
                            "kind": kinds[target],
                            "seed": seed,
                            "config": name,
                            "value": value,
                            "standard": plain,
                            "trivial": bar,
                        }
                    )
    elapsed = time.perf_counter() - started
    stem = "am_quality_starts" if args.rows == 3 else "am_quality_defaults"
    stem += "" if args.steps == 256 else f"_{args.steps}"
    write_results(args.out, stem, "(report pending)", {"records": records})
    text = _report(records, configs, args, elapsed)
    write_results(args.out, stem, text, {"records": records})
    print(text)


def _report(records: list[dict], configs: list[str], args, elapsed: float) -> str:
    baseline = BASELINES[args.rows]
    best: dict[tuple, float] = {}
    for r in records:
        key = (r["model"], r["target"])
        best[key] = max(best.get(key, -math.inf), r["value"])
    base = {
        (r["model"], r["target"], r["seed"]): r["value"] for r in records if r["config"] == baseline
    }
    rows = []
    for name in configs:
        mine = [r for r in records if r["config"] == name and best[(r["model"], r["target"])] > 0]
        cells = [name]
        for kind in ("class", "channel", None):
            shares = [
                r["value"] / best[(r["model"], r["target"])]
                for r in mine
                if kind is None or r["kind"] == kind
            ]
            cells.append(f"{statistics.median(shares):.3f}")
        ratios = [
            r["value"] / base[(r["model"], r["target"], r["seed"])]
            for r in mine
            if base[(r["model"], r["target"], r["seed"])] > 0
        ]
        below = sum(x < 1 - 1e-3 for x in ratios)
        cells.append(f"{below}/{len(ratios)}")
        cells.append(f"{min(ratios):.3f}")
        fails = sum(r["value"] <= r["trivial"] for r in mine)
        cells.append(f"{fails}/{len(mine)}")
        if DEFAULT in configs:
            cells.extend(_below_default(mine, records))
        rows.append(cells)
    options = [
        f"--models {' '.join(args.models)}" if args.models != DIGITS else "",
        f"--seeds {' '.join(map(str, args.seeds))}",
        f"--steps {args.steps}",
        f"--rows {args.rows}" if args.rows != 3 else "",
        "--configs " + " ".join(f"'{c}'" for c in configs[1:]) if configs[1:] else "",
    ]
    lines = [
        "# Start inputs on the trained CNNs, compute-matched"
        if args.rows == 3
        else "# Defaults on the trained CNNs, compute-matched",
        "",
        f"`{command('am_quality_starts', *options)}` — {machine_line()}; {elapsed:.0f} s.",
        "",
        f"{len({r['model'] for r in records})} models x 18 units (10 classes, 8 channels of the "
        f"last conv rectifier) x {len(args.seeds)} seed(s); {args.rows} rows per unit for every "
        f"configuration, lr 0.1, {args.steps} steps (a screened start's pool is paid for by "
        "fewer steps: a forward counts as a third of a step, charged as if it served one "
        "unit). Share = value / best known for the unit (max over the configurations here). "
        f"`below {baseline}`: units (x seeds) whose value is more than 0.1 % under the "
        "same-cost baseline's (paired by seed; baselines <= 0 left out). `fails trivial`: the "
        "value does not beat the best trivial input (upper, lower, mid, best of 16 random "
        "corners); a screened start is itself the best of many random corners, so it clears "
        "that bar almost by construction."
        + (
            f" `below the default's standard`: units (x seeds) whose value is more than 0.1 % "
            f"under the best standard row of `{DEFAULT}` (analyze's plain default; its standard "
            "result is the paper's baseline), and the lowest ratio to it."
            if DEFAULT in configs
            else ""
        ),
        "",
        markdown_table(
            [
                "configuration",
                "median share, classes",
                "channels",
                "all",
                f"below {baseline}",
                f"worst ratio to {baseline}",
                "fails trivial",
                *(
                    ["below the default's standard", "worst ratio to it"]
                    if DEFAULT in configs
                    else []
                ),
            ],
            rows,
        ),
        "",
        "Median share per model (all units x seeds):",
        "",
        _per_model(records, configs, best),
    ]
    return "\n".join(lines)


def _below_default(mine: list[dict], records: list[dict]) -> list[str]:
    """``[below, worst ratio]`` of ``mine`` against the default's standard rows (paired by
    unit and seed; standard values <= 0 left out)."""
    plain = {
        (r["model"], r["target"], r["seed"]): r["standard"]
        for r in records
        if r["config"] == DEFAULT
    }
    ratios = [
        r["value"] / plain[key]
        for r in mine
        if plain[key := (r["model"], r["target"], r["seed"])] > 0
    ]
    below = sum(x < 1 - 1e-3 for x in ratios)
    return [f"{below}/{len(ratios)}", f"{min(ratios):.3f}"]


def _per_model(records: list[dict], configs: list[str], best: dict[tuple, float]) -> str:
    models = list(dict.fromkeys(r["model"] for r in records))
    rows = []
    for model in models:
        cells = [model]
        for name in configs:
            shares = [
                r["value"] / best[(model, r["target"])]
                for r in records
                if r["model"] == model and r["config"] == name and best[(model, r["target"])] > 0
            ]
            cells.append(f"{statistics.median(shares):.3f}")
        rows.append(cells)
    return markdown_table(["model", *configs], rows)


if __name__ == "__main__":
    main()
