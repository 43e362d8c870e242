"""Many models, one time budget: does ``analyze A B C --time-budget 40s`` return in time?

Runs issue 25's two commands as a user would, each a fresh ``python -m onnx_am_cli.main``
process (so its start, torch's import and, with ``--workers 2``, Ray's start all count):

* ``plain``: ``analyze models/digits_deep_relu.onnx models/digits_relu.onnx
  models/digits_leaky001.onnx --steps 4000 --time-budget 40s --out DIR``;
* ``workers``: the same with ``--workers 2``.

Each of those models plans well over 40 s alone at 4000 steps. For each command it records
the wall time, the exit code, the load average before and after, and per model whether its
``report.json`` was written, its status, and the cuts its plan and pace stated. The target
(issue 25): within 50 s, every report written, every cut stated.

Run (from the repository root)::

    python -m benchmarks.many_budget            # --only plain|workers

Writes ``benchmarks/results/many_budget.md`` and ``many_budget.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import command, markdown_table, parser, write_results

MODELS = ("models/digits_deep_relu.onnx", "models/digits_relu.onnx", "models/digits_leaky001.onnx")
ARGS = ("--steps", "4000", "--time-budget", "40s")
TARGET_SECONDS = 50.0


def run_command(name: str, extra: tuple[str, ...], out: Path) -> dict:
    """One command in a fresh process; what it wrote and said."""
    command = [sys.executable, "-m", "onnx_am_cli.main", "analyze", *MODELS, *ARGS, *extra]
    command += ["--out", str(out)]
    load_before = os.getloadavg()
    tic = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - tic
    models = {Path(model).stem: report_of(out / Path(model).stem) for model in MODELS}
    return {
        "name": name,
        "command": " ".join(["onnx-am", *command[3:-2], "--out", "DIR"]),
        "wall_seconds": round(wall, 1),
        "within_target": wall <= TARGET_SECONDS,
        "exit_code": done.returncode,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "models": models,
        "every_report_written": all(m["report"] for m in models.values()),
        "stderr_tail": done.stderr.strip().splitlines()[-6:],
    }


def report_of(folder: Path) -> dict:
    """A model's report: written or not, its status, and the cuts stated (plan and pace)."""
    path = folder / "report.json"
    if not path.is_file():
        return {"report": False}
    doc = json.loads(path.read_text())
    plan = doc.get("plan", {})
    cuts = [f"{c['what']} {c['from']} -> {c['to']}" for c in plan.get("cuts", [])]
    return {
        "report": True,
        "status": doc.get("status"),
        "units": plan.get("units"),
        "units_asked": plan.get("units_asked"),
        "steps": plan.get("steps"),
        "cuts": cuts,
        "pace": doc.get("pace"),
        "results": len(doc.get("results", [])),
        "timings": {k: round(v, 2) for k, v in doc.get("timings", {}).items()},
    }


def table(doc: dict) -> str:
    """The results as markdown: one row per command, then one per model."""
    rows = []
    for run in doc["runs"]:
        load = f"{run['load_before'][0]:.1f} -> {run['load_after'][0]:.1f}"
        written = sum(m["report"] for m in run["models"].values())
        rows.append([run["name"], run["wall_seconds"], run["exit_code"], load, f"{written}/3"])
    models = []
    for run in doc["runs"]:
        for name, model in run["models"].items():
            cuts = ", ".join(model.get("cuts", [])) or "-"
            pace = model.get("pace") or {}
            paced = ", ".join(f"{k} {v}" for k, v in pace.items() if k != "seconds_per_row_step")
            models.append([run["name"], name, model.get("status", "no report"), cuts, paced or "-"])
    return "\n".join(
        [
            "# Many models, one time budget (issue 25)",
            "",
            f"`{doc['command']}` on {doc['cores']} cores; target: within "
            f"{doc['target_seconds']:.0f} s, every report written and its cuts stated.",
            "",
            markdown_table(["command", "wall s", "exit", "load (1 min)", "reports"], rows),
            "",
            markdown_table(["command", "model", "status", "plan cuts", "pace"], models),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    options = parser(__doc__)
    options.add_argument("--only", choices=("plain", "workers"), nargs="*")
    args = options.parse_args(argv)
    commands = {"plain": (), "workers": ("--workers", "2")}
    runs = []
    with tempfile.TemporaryDirectory(prefix="many-budget-") as folder:
        for name, extra in commands.items():
            if args.only and name not in args.only:
                continue
            runs.append(run_command(name, extra, Path(folder) / name))
            print(json.dumps(runs[-1], indent=1), flush=True)
    only = f"--only {' '.join(args.only)}" if args.only else ""
    doc = {
        "command": command("many_budget", only),
        "target_seconds": TARGET_SECONDS,
        "cores": os.cpu_count(),
        "runs": runs,
    }
    print(f"wrote {write_results(args.out, 'many_budget', table(doc), doc)}")


if __name__ == "__main__":
    main()
