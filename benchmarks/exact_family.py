"""Reach of the exact maximum on the known-answer family, at equal cost.

Every network of ``models/exact_family.json`` (32 small ReLU / LeakyReLU nets, 1-4 hidden
layers, exact maxima by MILP; see ``models/make_exact_family.py``) is maximized by each
configuration below. Every configuration spends the same number of rows (optimized inputs)
per network and the same steps per row, so they cost the same: one method runs ``--rows``
restarts (different starts); a portfolio runs one row per method from the same start and
counts the best of them, exactly as the ``best`` methods report it.
The table gives, per configuration and step budget, the share of networks on which the value
found reaches at least 0.99 of the exact maximum, and the median reach (value / maximum).

Run (from the repository root)::

    python -m benchmarks.exact_family [--steps 64 256] [--rows 3]
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from benchmarks.harness import (
    MODELS,
    command,
    machine_line,
    markdown_table,
    parser,
    write_results,
)
from onnx_am import AMConfig, import_onnx, maximize

FAMILY = MODELS / "exact_family.json"
#: The step rules of ``onnx-am analyze --step-rule``.
STEP_RULES = {
    "normalized": {"optimizer": "pga", "normalize_grad": True},
    "raw": {"optimizer": "pga", "normalize_grad": False},
    "adam": {"optimizer": "adam", "normalize_grad": False},
}
PORTFOLIO = ["standard", "decoupled(0.3)", "decoupled(anneal(1.0))"]
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
SUCCESS = 0.99


def reach(imported, target: str, setting: tuple, rows: int, steps: int) -> float:
    """Best true value over ``rows`` rows, in one batched call: one method, ``rows`` restarts;
    or a portfolio, one row per method from the same start (``rows`` must equal its size)."""
    rule, schedule, methods = setting
    restarts = rows // len(methods)
    config = AMConfig(
        steps=steps,
        lr=0.1,
        restarts=restarts,
        crosscheck=False,
        lr_schedule=schedule,
        lr_cycles=4,
        **STEP_RULES[rule],
    )
    found = maximize(imported, [target], methods, config)
    return max(result.activation for result in found.results)


def main(argv: list[str] | None = None) -> None:
    cli = parser(__doc__)
    cli.add_argument("--steps", type=int, nargs="+", default=[64, 256])
    cli.add_argument("--rows", type=int, default=3, help="rows (optimized inputs) per network")
    cli.add_argument("--only", nargs="*", help="run only these networks (names)")
    args = cli.parse_args(argv)
    torch.set_num_threads(args.threads)
    family = json.loads(FAMILY.read_text())["networks"]
    names = args.only or list(family)
    records = []
    started = time.perf_counter()
    for name in names:
        entry = family[name]
        imported = import_onnx(MODELS / entry["file"])
        print(f"{name} ({time.perf_counter() - started:.0f} s)", flush=True)
        for steps in args.steps:
            for config, setting in CONFIGS.items():
                value = reach(imported, entry["target"], setting, args.rows, steps)
                records.append(
                    {
                        "network": name,
                        "kind": entry["kind"],
                        "steps": steps,
                        "config": config,
                        "value": value,
                        "max": entry["max"],
                        "reach": value / entry["max"],
                    }
                )
    elapsed = time.perf_counter() - started
    text = _report(records, args, elapsed)
    write_results(args.out, "exact_family", text, {"records": records})
    print(text)


def _report(records: list[dict], args, elapsed: float) -> str:
    rows = []
    for steps in args.steps:
        for config in CONFIGS:
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
    steps = " ".join(map(str, args.steps))
    kinds = {}
    for record in records:
        kinds.setdefault(record["kind"], set()).add(record["network"])
    lines = [
        "# Exact-maximum family: reach at equal cost",
        "",
        f"`{command('exact_family', '--steps ' + steps, f'--rows {args.rows}')}`"
        f" — {machine_line()}; {elapsed:.0f} s.",
        "",
        f"{len({r['network'] for r in records})} networks "
        f"({', '.join(f'{k}: {len(v)}' for k, v in kinds.items())}); "
        f"{args.rows} rows per network for every configuration, lr 0.1 (schedules decay to "
        f"0.05 x lr; restarts: 4 cosine cycles), starts near the box centre. "
        f"Success: value >= {SUCCESS} x the exact maximum.",
        "",
        markdown_table(
            ["steps", "configuration", "success", "median reach", "worst", "kinds that fail"],
            rows,
        ),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
