"""What decoupling costs through the command line: ``decoupled(0.3)`` vs ``standard`` on ResNet-50.

Issue 25's check of the engine's fixed costs: the same rows (16 units x 1 restart, batch 16,
default threads) of a seeded torchvision ResNet-50 exported to ONNX, optimized by
``onnx-am analyze`` with ``--method standard`` and with ``--method "decoupled(0.3)"``, each a
fresh process, in interleaved rounds whose order alternates (so a slow drift of the machine's
load hits both alike). Per run it records report.json's ``timings`` (``optimize`` is the
engine's share), the process's CPU time and the load average; per round the ratio
decoupled / standard of ``optimize``; the result is the median over rounds. Target (issue 25):
<= 1.06.

Run (from the repository root)::

    python -m benchmarks.cli_ratio                 # 3 rounds, 12 steps
    python -m benchmarks.cli_ratio --rounds 5 --model /path/resnet50.onnx

Writes ``benchmarks/results/cli_ratio.md`` and ``cli_ratio.json``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import (
    ROOT,
    command,
    export_resnet50,
    machine,
    machine_line,
    markdown_table,
    parser,
    write_results,
)

METHODS = ("standard", "decoupled(0.3)")
TARGET = 1.06


def cli_run(model: Path, method: str, steps: int, out: Path) -> dict:
    """One ``onnx-am analyze`` process; its timings, CPU seconds and load."""
    cmd = [sys.executable, "-m", "onnx_am_cli.main", "analyze", str(model), "--method", method]
    cmd += ["--steps", str(steps), "--restarts", "1", "--max-units", "16", "--batch-size", "16"]
    cmd += ["--time-budget", "none", "--out", str(out), "--force", "--json"]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tic = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    wall = time.monotonic() - tic
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    doc = json.loads((out / "report.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "method": method,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "load_before": round(load, 2),
        "rows": doc["plan"]["rows"],
        "steps": doc["plan"]["steps"],
        "timings": {k: round(v, 3) for k, v in doc["timings"].items()},
    }


def measure(model: Path, rounds: int, steps: int) -> list[list[dict]]:
    out = Path(tempfile.mkdtemp(prefix="cli_ratio_"))
    cli_run(model, "standard", 2, out)  # warm the file cache and the kernels' first loads
    seen = []
    for round_ in range(rounds):
        order = METHODS if round_ % 2 == 0 else METHODS[::-1]
        runs = [cli_run(model, method, steps, out) for method in order]
        for run in runs:
            print(json.dumps({"round": round_, **run}), file=sys.stderr, flush=True)
        seen.append(sorted(runs, key=lambda r: METHODS.index(r["method"])))
    return seen


def ratio(runs: list[dict], key: str) -> float:
    standard, decoupled = runs
    value = (lambda r: r["timings"]["optimize"]) if key == "optimize" else (lambda r: r[key])
    return value(decoupled) / value(standard)


def render(seen: list[list[dict]], info: dict, line: str) -> str:
    rows, ratios = [], []
    for round_, runs in enumerate(seen):
        ratios.append(ratio(runs, "optimize"))
        for run in runs:
            rows.append(
                [
                    round_,
                    run["method"],
                    run["rows"],
                    run["steps"],
                    run["timings"]["optimize"],
                    run["wall_s"],
                    run["cpu_s"],
                    run["load_before"],
                ]  # fmt: skip
            )
    median = sorted(ratios)[len(ratios) // 2]
    verdict = "ok" if median <= TARGET else "**over**"
    cpu = sorted(ratio(runs, "cpu_s") for runs in seen)[len(seen) // 2]
    return "\n".join(
        [
            "# decoupled(0.3) / standard through the CLI, ResNet-50",
            "",
            f"`{line}`",
            "",
            machine_line(info),
            "",
            f"Per-round ratio of `timings.optimize`: {', '.join(f'{r:.3f}' for r in ratios)}; "
            f"median **{median:.3f}** (target <= {TARGET}: {verdict}). Median ratio of the "
            f"processes' CPU time: {cpu:.3f}.",
            "",
            markdown_table(
                ["round", "method", "rows", "steps", "optimize s", "wall s", "CPU s", "load"],
                rows,
            ),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    cli = parser(__doc__)
    cli.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    cli.add_argument("--steps", type=int, default=12, help="steps per run")
    cli.add_argument("--model", type=Path, help="a ResNet-50 .onnx (default: export one)")
    args = cli.parse_args(argv)
    model = args.model
    if model is None:
        model = Path(tempfile.mkdtemp(prefix="cli_ratio_model_")) / "resnet50.onnx"
        export_resnet50(model)
    seen = measure(model, args.rounds, args.steps)
    line = command("cli_ratio", f"--rounds {args.rounds}", f"--steps {args.steps}")
    info = machine()
    data = {"machine": info, "rounds": seen, "ratios": [ratio(r, "optimize") for r in seen]}
    print(write_results(args.out, "cli_ratio", render(seen, info, line), data))


if __name__ == "__main__":
    main()
