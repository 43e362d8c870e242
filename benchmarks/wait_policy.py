"""OpenMP's wait policy on a shared machine: engine step times with idle threads spinning or asleep.

torch's CPU ops run on OpenMP threads. By default (``OMP_WAIT_POLICY`` unset) GNU OpenMP's
idle threads spin for a while before they sleep; on a machine whose cores other processes also
want, a spinning thread takes a core from the thread that has the work, and every parallel
region waits for its slowest thread. ``import onnx_am`` sets ``GOMP_SPINCOUNT=10000`` (idle
threads spin 10,000 rounds, then sleep) unless the user set a wait policy or spin count. This
benchmark measures what that changes, beside ``OMP_WAIT_POLICY=PASSIVE`` (no spinning), each
policy in a fresh process (OpenMP reads the variable once, when torch loads), in interleaved
rounds:

* ``as found``: nothing is added to what the machine runs (its load is recorded per process;
  idle only on an otherwise idle machine);
* ``busy``: ``--busy`` processes spin on the CPU meanwhile (``python -c "while True: pass"``),
  as CI runners and shared workstations do.

Per process: the median and 90th percentile of ``--steps`` engine steps of
``digits_deep_relu`` (60 rows, analyze's default methods) after two untimed ones, and with
``--resnet`` the same for a seeded torchvision ResNet-50 at 16 rows (standard rows).

Run (from the repository root)::

    python -m benchmarks.wait_policy                    # digits, idle and 3 busy processes
    python -m benchmarks.wait_policy --resnet --rounds 1

Writes ``benchmarks/results/wait_policy.md`` and ``wait_policy.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import (
    ROOT,
    command,
    machine,
    machine_line,
    markdown_table,
    parser,
    write_results,
)

POLICIES = ("default", "passive", "spin", "onnx_am")

#: ``spin``: idle threads spin 10,000 rounds (microseconds), then sleep (GNU OpenMP's
#: ``GOMP_SPINCOUNT``; its default is 300,000), a middle way measured beside the two.
SPINCOUNT = "10000"
DIGITS = "models/digits_deep_relu.onnx"


#: What a measuring process runs first: torch before onnx_am, so OpenMP starts without the
#: variable onnx_am sets (the policy is in the environment given); ``onnx_am`` loads onnx_am
#: first, as the CLI does.
FIRST_IMPORT = {
    "default": "import torch",
    "passive": "import torch",
    "spin": "import torch",
    "onnx_am": "import onnx_am",
}


def child(policy: str, model: str, rows: int, steps: int, method: str | None) -> dict:
    """Time engine steps in this process (started by :func:`measure_once`)."""
    import onnx_am
    from onnx_am.audit.options import AnalyzeOptions
    from onnx_am.audit.pipeline import AuditPipeline, rewrite_for
    from onnx_am.engine.deadline import Deadline
    from onnx_am.engine.loop import optimize_rows
    from onnx_am.engine.rows import layout_rows
    from onnx_am.engine.starts import make_starts

    options = {"steps": 1000, "time_budget": None, "restarts": 1 if method else 3}
    if method:
        options["methods"] = (method,)
    pipeline = AuditPipeline(
        AnalyzeOptions.of(**options), Deadline.starting_now(None), lambda event: None
    )
    loaded = pipeline.load(model)
    asked, config = loaded.asked, loaded.asked.config
    per_unit = config.starts.restarts * len(asked.runs)
    targets = list(asked.targets)[: max(1, rows // per_unit)]
    layout = layout_rows(len(targets), config.starts.restarts, len(asked.runs))[:rows]
    made = make_starts("random", loaded.imported, config.domain, targets, config.starts.restarts, 0)
    starts = {
        (t, r): made[t, r] for t in range(len(targets)) for r in range(config.starts.restarts)
    }
    stamps: list[float] = []

    class Enough(Exception):
        pass

    def on_step(done: int, total: int, info: dict) -> None:
        stamps.append(time.perf_counter())
        if len(stamps) >= steps + 2:
            raise Enough

    rewrite = rewrite_for(loaded.imported, asked)
    try:
        optimize_rows(
            loaded.imported, config, targets, asked.runs, layout, starts, rewrite, on_step
        )
    except Enough:
        pass
    times = sorted(b - a for a, b in zip(stamps[1:], stamps[2:], strict=False))
    return {
        "policy": policy,
        "model": Path(model).stem,
        "rows": len(layout),
        "steps": len(times),
        "median_ms": 1000 * times[len(times) // 2],
        "p90_ms": 1000 * times[min(len(times) - 1, int(0.9 * len(times)))],
        "onnx_am": onnx_am.__file__,
    }


def measure_once(policy: str, model: str, rows: int, steps: int, method: str | None) -> dict:
    """One fresh process (the user's own ``OMP_WAIT_POLICY`` removed first)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if policy == "spin":
        env["GOMP_SPINCOUNT"] = SPINCOUNT
    if policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    args = [policy, model, str(rows), str(steps), method or "-"]
    code = f"{FIRST_IMPORT[policy]}; from benchmarks.wait_policy import main; main()"
    cmd = [sys.executable, "-c", code, "--child", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def busy_processes(count: int) -> list[subprocess.Popen]:
    """``count`` processes that spin on the CPU until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def measure(args) -> list[dict]:
    models = [(DIGITS, 60, None)]
    folder = tempfile.mkdtemp(prefix="wait_policy_")
    if args.resnet:
        from benchmarks.harness import export_resnet50

        path = os.path.join(folder, "resnet50.onnx")
        export_resnet50(path)
        models.append((path, 16, "standard"))
    rows = []
    for condition in args.conditions:
        spinning = busy_processes(args.busy) if condition == "busy" else []
        try:
            for round_ in range(args.rounds):
                order = POLICIES if round_ % 2 == 0 else POLICIES[::-1]
                for model, batch, method in models:
                    for policy in order:
                        load = os.getloadavg()[0]
                        row = measure_once(policy, model, batch, args.steps, method)
                        row.update(condition=condition, round=round_, load=round(load, 2))
                        rows.append(row)
                        print(json.dumps(row), file=sys.stderr, flush=True)
        finally:
            for process in spinning:
                process.kill()
    return rows


CONDITIONS = {"idle": "as found", "busy": "as found + {busy} busy processes"}

POLICY_LABELS = {
    "default": "unset (spin, then sleep)",
    "passive": "PASSIVE",
    "spin": f"unset, GOMP_SPINCOUNT={SPINCOUNT}",
    "onnx_am": "what import onnx_am sets",
}


def render(rows: list[dict], info: dict, command_line: str, busy: int) -> str:
    table = [
        [
            CONDITIONS[r["condition"]].format(busy=busy),
            r["model"],
            r["rows"],
            r["round"],
            POLICY_LABELS[r["policy"]],
            f"{r['median_ms']:.1f}",
            f"{r['p90_ms']:.1f}",
            r["load"],
        ]
        for r in rows
    ]
    summary = []
    for condition in dict.fromkeys(r["condition"] for r in rows):
        for model in dict.fromkeys(r["model"] for r in rows):
            medians = {}
            for policy in POLICIES:
                seen = [r["median_ms"] for r in rows if (r["condition"], r["model"], r["policy"])
                        == (condition, model, policy)]  # fmt: skip
                medians[policy] = sorted(seen)[len(seen) // 2] if seen else float("nan")
            for policy in POLICIES:
                ratio = medians[policy] / medians["default"]
                label = CONDITIONS[condition].format(busy=busy)
                summary.append([label, model, POLICY_LABELS[policy],
                                f"{medians[policy]:.1f}", f"{ratio:.2f}x"])  # fmt: skip
    header = ["machine", "model", "rows", "round", "OMP_WAIT_POLICY", "median ms/step"]
    header += ["p90 ms/step", "load (1 min) before"]
    return "\n".join(
        [
            "# OpenMP wait policy: engine step times, idle and with busy processes",
            "",
            f"`{command_line}`",
            "",
            machine_line(info),
            "",
            "Each row is a fresh process (OpenMP reads the policy once, when torch loads).",
            "Summary: per machine state, model and policy, the median over rounds of each",
            "process's median step, and its ratio to the unset policy's.",
            "",
            markdown_table(["machine", "model", "OMP_WAIT_POLICY", "ms/step", "vs unset"], summary),
            "",
            "Every process:",
            "",
            markdown_table(header, table),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    cli = parser(__doc__, child=True)
    cli.add_argument("--rounds", type=int, default=2, help="interleaved rounds per condition")
    cli.add_argument("--steps", type=int, default=20, help="timed steps per process")
    cli.add_argument("--busy", type=int, default=3, help="spinning processes in 'busy'")
    cli.add_argument("--resnet", action="store_true", help="also a ResNet-50 at 16 rows")
    cli.add_argument("--name", default="wait_policy", help="results file name (no suffix)")
    cli.add_argument(
        "--conditions", nargs="+", choices=("idle", "busy"), default=["idle", "busy"],
        help="'idle': as found; 'busy': with --busy spinning processes added",
    )  # fmt: skip
    args = cli.parse_args(argv)
    if args.child:
        policy, model, rows, steps, method = args.child
        result = child(policy, model, int(rows), int(steps), None if method == "-" else method)
        print(json.dumps(result))
        return
    rows = measure(args)
    options = [f"--rounds {args.rounds}", f"--steps {args.steps}", f"--busy {args.busy}"]
    if args.conditions != ["idle", "busy"]:
        options.append("--conditions " + " ".join(args.conditions))
    extra = [
        "--resnet" if args.resnet else "",
        f"--name {args.name}" if args.name != "wait_policy" else "",
    ]
    line = command("wait_policy", *options, *extra)
    info = machine()
    text = render(rows, info, line, args.busy)
    path = write_results(args.out, args.name, text, {"machine": info, "rows": rows})
    print(path)


if __name__ == "__main__":
    main()
