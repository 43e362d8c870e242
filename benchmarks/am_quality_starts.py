"""Start inputs on the trained CNNs, compute-matched: every configuration spends 3 rows per unit.

The digits CNNs of ``models/`` (10 classes + 8 channels of the last convolutional rectifier
each, as in ``am_quality``) are maximized by each configuration at the same cost: 3 rows
(optimized inputs) per unit and the same row-steps. A ``screened`` start spends forward
passes before the first step (a forward costs about a third of a forward + backward step);
its rows take ``ceil(restarts * candidates / (3 * rows))`` fewer steps, charged as if the
pool served one unit only (it serves every unit of the run, so this overcharges it).

Reported per configuration: the median share of the best value known for the unit (the
maximum over every configuration and seed here), per target kind; how many units end below
the same-cost baseline (``standard x3``: three standard restarts from the default start) and
the worst ratio to it; how many fail to beat a trivial input.

Run (from the repository root)::

    python -m benchmarks.am_quality_starts [--models digits_relu ...] [--seeds 0 1]
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
    write_results,
)
from onnx_am import AMConfig, import_onnx, maximize

ROWS = 3
NORMALIZED = {"optimizer": "pga", "normalize_grad": True}
ADAM = {"optimizer": "adam", "normalize_grad": False}
#: name -> (methods, restarts, settings); every configuration runs ROWS rows per unit.
PLAIN = {
    "standard x3": (["standard"], 3, NORMALIZED),
    "standard x3, cosine": (["standard"], 3, {**NORMALIZED, "lr_schedule": "cosine"}),
    "standard x3, adam cosine": (["standard"], 3, {**ADAM, "lr_schedule": "cosine"}),
    "portfolio": (["portfolio"], 1, NORMALIZED),
    "portfolio, cosine": (["portfolio"], 1, {**NORMALIZED, "lr_schedule": "cosine"}),
    "portfolio, adam cosine": (["portfolio"], 1, {**ADAM, "lr_schedule": "cosine"}),
}
#: Each plain configuration with a screened start of 96 or 384 candidates per restart.
CONFIGS = {
    **PLAIN,
    **{
        f"{name}, screened {count}": (methods, restarts, {**settings, "screen": count})
        for name, (methods, restarts, settings) in PLAIN.items()
        for count in (96, 384)
    },
}
BASELINE = "standard x3"


def run_config(
    imported, targets: list[str], name: str, steps: int, seed: int
) -> tuple[list[float], list[float]]:
    """Per target: the best value of the configuration's rows, and the best trivial input."""
    methods, restarts, settings = CONFIGS[name]
    screen = settings.get("screen", 0)
    config = AMConfig(
        **settings,
        start="screened" if screen else "random",
        steps=steps - math.ceil(restarts * screen / (3 * ROWS)),
        lr=0.1,
        restarts=restarts,
        seed=seed,
        crosscheck=False,
    )
    report = maximize(imported, targets, methods, config)
    return [r.activation for r in report.results], [b.best for b in report.baselines]


def main(argv: list[str] | None = None) -> None:
    cli = parser(__doc__)
    cli.add_argument("--models", nargs="+", default=DIGITS)
    cli.add_argument("--seeds", type=int, nargs="+", default=[0])
    cli.add_argument("--steps", type=int, default=256)
    cli.add_argument(
        "--configs", nargs="+", default=list(PLAIN), choices=list(CONFIGS), metavar="NAME"
    )
    args = cli.parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = list(dict.fromkeys([BASELINE, *args.configs]))
    records = []
    started = time.perf_counter()
    for model in available(args.models):
        imported = import_onnx(model_path(model))
        targets, kinds = unit_targets(imported, 10, 8)
        print(f"{model} ({time.perf_counter() - started:.0f} s)", flush=True)
        for seed in args.seeds:
            for name in configs:
                values, trivial = run_config(imported, targets, name, args.steps, seed)
                for target, value, bar in zip(targets, values, trivial, strict=True):
                    records.append(
                        {
                            "model": model,
                            "target": target,
                            "kind": kinds[target],
                            "seed": seed,
                            "config": name,
                            "value": value,
                            "trivial": bar,
                        }
                    )
    elapsed = time.perf_counter() - started
    write_results(args.out, "am_quality_starts", "(report pending)", {"records": records})
    text = _report(records, configs, args, elapsed)
    write_results(args.out, "am_quality_starts", text, {"records": records})
    print(text)


def _report(records: list[dict], configs: list[str], args, elapsed: float) -> str:
    best: dict[tuple, float] = {}
    for r in records:
        key = (r["model"], r["target"])
        best[key] = max(best.get(key, -math.inf), r["value"])
    base = {
        (r["model"], r["target"], r["seed"]): r["value"] for r in records if r["config"] == BASELINE
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
        rows.append(cells)
    options = [
        f"--models {' '.join(args.models)}" if args.models != DIGITS else "",
        f"--seeds {' '.join(map(str, args.seeds))}",
        f"--steps {args.steps}",
        "--configs " + " ".join(f"'{c}'" for c in configs[1:]) if configs[1:] else "",
    ]
    lines = [
        "# Start inputs on the trained CNNs, compute-matched",
        "",
        f"`{command('am_quality_starts', *options)}` — {machine_line()}; {elapsed:.0f} s.",
        "",
        f"{len({r['model'] for r in records})} models x 18 units (10 classes, 8 channels of the "
        f"last conv rectifier) x {len(args.seeds)} seed(s); {ROWS} rows per unit for every "
        f"configuration, lr 0.1, {args.steps} steps (a screened start's pool is paid for by "
        "fewer steps: a forward counts as a third of a step, charged as if it served one "
        "unit). Share = value / best known for the unit (max over the configurations here). "
        f"`below {BASELINE}`: units (x seeds) whose value is more than 0.1 % under the "
        "same-cost baseline's (paired by seed; baselines <= 0 left out). `fails trivial`: the "
        "value does not beat the best trivial input (upper, lower, mid, best of 16 random "
        "corners); a screened start is itself the best of many random corners, so it clears "
        "that bar almost by construction.",
        "",
        markdown_table(
            [
                "configuration",
                "median share, classes",
                "channels",
                "all",
                f"below {BASELINE}",
                f"worst ratio to {BASELINE}",
                "fails trivial",
            ],
            rows,
        ),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
