"""Does the decoupled backward help on SiLU / HardSwish networks? standard vs floored backward.

On the digits CNNs trained with SiLU and with HardSwish (``models/digits_silu.onnx``,
``models/digits_hardswish.onnx``, made by ``models/make_digits_smooth.py``), every logit
(10 units) is maximized with the standard gradient and with the opt-in smooth rules'
decoupled backward (``grad * max(f'(x), beta)``, forward exact) at several betas, from three
kinds of start, at two step budgets. Reported per (model, start, steps, method): the mean
true logit reached (original network, cross-checked by onnxruntime), the mean gain over
standard, and on how many units the method beats standard by more than 1 % of |standard|.

Run (from the repository root)::

    python -m benchmarks.smooth_activations          # ~2-4 min on 2 CPU cores
    python -m benchmarks.smooth_activations --quick  # one start, one budget

Writes ``benchmarks/results/smooth_activations.md`` and ``.json``.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks.harness import (
    RESULTS,
    available,
    command,
    machine,
    machine_line,
    markdown_table,
    model_path,
    parser,
    write_results,
)
from onnx_am import import_onnx
from onnx_am.domain import InputDomain
from onnx_am.engine.config import AMConfig
from onnx_am.engine.maximizer import maximize
from onnx_am.passes import SMOOTH_RULES, decouple_rectifiers

MODELS = ["digits_silu", "digits_hardswish"]
METHODS = ["standard", "decoupled(0.05)", "decoupled(0.1)", "decoupled(0.3)"]
STARTS = ["random", "lower", "mid"]
BUDGETS = [16, 64]
RESTARTS = 2


def run(name: str, start: str, steps: int) -> list[dict]:
    """One maximize call: every logit, every method; one row per (unit, method)."""
    imported = import_onnx(model_path(name))
    rewrite = decouple_rectifiers(imported, rules=SMOOTH_RULES)
    config = AMConfig.of(
        steps=steps, lr=0.1, restarts=RESTARTS, seed=0, start=start,
        domain=InputDomain(low=-1.0, high=1.0), normalize_grad=True,
    )  # fmt: skip
    report = maximize(imported, None, METHODS, config, rewrite=rewrite)
    return [
        {
            "model": name,
            "start": start,
            "steps": steps,
            "unit": r.unit,
            "method": r.method,
            "activation": r.activation,
            "agrees": r.agrees,
            "rewritten": len(rewrite.rewritten),
        }  # fmt: skip
        for r in report.results
    ]


def summarize(rows: list[dict]) -> list[list[object]]:
    table = []
    keys = sorted({(r["model"], r["start"], r["steps"]) for r in rows}, key=str)
    for model, start, steps in keys:
        group = [r for r in rows if (r["model"], r["start"], r["steps"]) == (model, start, steps)]
        standard = {r["unit"]: r["activation"] for r in group if r["method"] == "standard"}
        for method in METHODS:
            mine = {r["unit"]: r["activation"] for r in group if r["method"] == method}
            gains = [mine[u] - standard[u] for u in standard]
            wins = sum(g > 0.01 * abs(standard[u]) for u, g in zip(standard, gains, strict=True))
            losses = sum(g < -0.01 * abs(standard[u]) for u, g in zip(standard, gains, strict=True))
            table.append([
                model, start, steps, method, f"{np.mean(list(mine.values())):.3f}",
                f"{np.mean(gains):+.3f}", f"{wins}/{len(gains)}", f"{losses}/{len(gains)}",
            ])  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> None:
    args_parser = parser(__doc__, threads=1)
    args_parser.add_argument("--quick", action="store_true", help="one start, one budget")
    args = args_parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    starts, budgets = (STARTS[:1], BUDGETS[:1]) if args.quick else (STARTS, BUDGETS)
    names = available(MODELS)
    started = time.perf_counter()
    rows = [r for n in names for s in starts for b in budgets for r in run(n, s, b)]
    seconds = time.perf_counter() - started
    header = ["model", "start", "steps", "method", "mean logit", "gain vs standard",
              "beats standard", "loses to standard"]  # fmt: skip
    agree = sum(r["agrees"] for r in rows)
    text = "\n".join([
        "# Smooth activations: standard vs floored (decoupled) backward",
        "",
        f"`{command('smooth_activations', '--quick' if args.quick else '')}` on "
        f"{machine_line()}; {seconds:.0f} s; shared machine.",
        "",
        f"Every logit of each model, {RESTARTS} restarts (best reported), pga lr 0.1 with "
        "normalized gradient, domain [-1, 1]. 'beats / loses': units where the method's true "
        "logit is more than 1 % of |standard| above / below standard's. "
        f"onnxruntime agrees on {agree}/{len(rows)} values.",
        "",
        markdown_table(header, summarize(rows)),
    ])  # fmt: skip
    path = write_results(args.out or RESULTS, "smooth_activations" + ("_quick" if args.quick
                         else ""), text, {"machine": machine(), "rows": rows})  # fmt: skip
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
