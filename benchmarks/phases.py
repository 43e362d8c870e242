"""Where a small audit's wall time goes: ``analyze`` on the digits CNNs, split per phase.

    python -m benchmarks.phases [--models digits_relu ...] [--units 10] [--repeat 1]
        [--interval 0.002] [--threads 1] [--name phases]

Per model, one ``analyze`` call at its defaults (10 units of ``logits``, analyze's default
methods, restarts and steps, no time budget, seed 0) runs in this process while a sampling
thread looks at the main thread's Python stack every ``--interval`` seconds and gives the
time since its last look to the phase the stack is in (the outermost frame that names one,
see :data:`PHASES`; inside the engine's chunk call the innermost). Nothing in the library is
changed or wrapped; a sample costs the main thread one GIL hand-over. The phases:

- import: ``import_onnx`` (load, convert, probes); plan: the options parsed against the
  model and the budget plan; report: opening the report directory, hashing the model;
- parity: onnxruntime vs torch on random inputs; rewrite: the decoupling pass;
- measurement: the real steps timed for the plan (``measure_costs``);
- baselines, starts, optimization (the steps and the results' assembly), cross-check
  (onnxruntime recomputes every result): the engine's chunk call;
- report writing: images (``.npy`` / ``.png`` per result) and ``report.json``;
- render: plots and ``index.html``;
- other: anything else (the sampler's own start, the caller's bookkeeping).

A fresh interpreter's ``import onnx_am.audit.analyze`` (torch, onnx, onnxruntime) is timed
separately as ``startup``: the CLI pays it once per command. Writes
``benchmarks/results/<name>.md`` and ``.json``. Not a test.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from types import FrameType

import torch

from benchmarks import harness
from onnx_am.audit.analyze import AnalyzeOptions, analyze

MODELS = ("digits_relu", "digits_deep_relu", "digits_leaky001")

#: ``(module path suffix, function) -> phase``; the audit's stages, matched outermost first.
STAGES = {
    ("audit/pipeline.py", "import_model"): "import",
    ("audit/options.py", "choose_defaults"): "plan",
    ("audit/options.py", "plan_analysis"): "plan",
    ("audit/planning.py", "make_plan"): "plan",
    ("audit/analyze.py", "model_summary"): "report",
    ("audit/report.py", "open"): "report",
    ("audit/report.py", "check_resumable"): "report",
    ("audit/analyze.py", "_parity"): "parity",
    ("audit/pipeline.py", "rewrite_for"): "rewrite",
    ("audit/planning.py", "measure_costs"): "measurement",
    ("audit/render/site.py", "render_plots"): "render",
    ("audit/render/site.py", "write_page"): "render",
    ("audit/report.py", "write_json"): "report writing",
    ("audit/chunks.py", "_save"): "report writing",
    ("engine/maximizer.py", "run_plan"): "optimization",
}

#: Inside the engine's chunk call (``run_plan``), matched innermost first.
ENGINE = {
    ("engine/baselines.py", "trivial_baselines"): "baselines",
    ("engine/starts.py", "make_starts"): "starts",
    ("engine/maximizer.py", "_crosscheck_results"): "cross-check",
}

#: Every phase, in the order an audit goes through them.
PHASES = (
    "import",
    "plan",
    "report",
    "parity",
    "rewrite",
    "measurement",
    "baselines",
    "starts",
    "optimization",
    "cross-check",
    "report writing",
    "render",
    "other",
)


def _key(frame: FrameType) -> tuple[str, str]:
    path = frame.f_code.co_filename.replace("\\", "/")
    parts = path.rsplit("/", 2)
    return "/".join(parts[-2:]) if len(parts) >= 2 else path, frame.f_code.co_name


def _key3(frame: FrameType) -> tuple[str, str]:
    path = frame.f_code.co_filename.replace("\\", "/")
    return "/".join(path.rsplit("/", 3)[-3:]), frame.f_code.co_name


def classify(frame: FrameType | None) -> str:
    """The phase of a stack whose innermost frame is ``frame``."""
    stack = []
    while frame is not None:
        stack.append(frame)
        frame = frame.f_back
    phase = "other"
    for position, outer in enumerate(reversed(stack)):  # outermost first
        found = STAGES.get(_key(outer)) or STAGES.get(_key3(outer))
        if found is None:
            continue
        if found != "optimization":
            return found
        for inner in stack[: len(stack) - position]:  # innermost first, within run_plan
            refined = ENGINE.get(_key(inner))
            if refined is not None:
                return refined
            if STAGES.get(_key(inner)) == "report writing":
                return "report writing"
        return "optimization"
    return phase


class PhaseSampler:
    """Samples the main thread's stack every ``interval`` seconds from a daemon thread; the
    wall time and the process's CPU time (all threads: torch's too) since the previous sample
    go to the phase of the stack seen now. CPU time is what the machine's load changes least."""

    def __init__(self, interval: float):
        self.interval = interval
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu_seconds: dict[str, float] = defaultdict(float)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._main = threading.main_thread().ident

    def __enter__(self) -> PhaseSampler:
        self.started, self.started_cpu = time.perf_counter(), time.process_time()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.wall = time.perf_counter() - self.started
        self.cpu = time.process_time() - self.started_cpu

    def _run(self) -> None:
        last, last_cpu = time.perf_counter(), time.process_time()
        while not self._stop.wait(self.interval):
            frame = sys._current_frames().get(self._main)
            phase = classify(frame)
            now, cpu = time.perf_counter(), time.process_time()
            self.seconds[phase] += now - last
            self.cpu_seconds[phase] += cpu - last_cpu
            self.samples += 1
            last, last_cpu = now, cpu


def startup_seconds() -> float:
    """Seconds a fresh interpreter takes to ``import onnx_am.audit.analyze``."""
    code = "import time; t = time.perf_counter(); import onnx_am.audit.analyze; "
    code += "print(time.perf_counter() - t)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=harness.ROOT
    )
    return float(done.stdout.strip().splitlines()[-1])


def audit_phases(name: str, units: int, interval: float) -> dict:
    """One default ``analyze`` of model ``name`` (``units`` units of logits), split per phase."""
    path = harness.model_path(name)
    options = AnalyzeOptions.of(targets=(f"logits:0-{units - 1}",), time_budget=None, seed=0)
    with tempfile.TemporaryDirectory() as tmp, PhaseSampler(interval) as sampler:
        report = analyze(path, options, Path(tmp) / "report")
    timings = report.doc.get("timings", {})
    return {
        "model": name,
        "units": units,
        "results": len(report.results),
        "wall_s": sampler.wall,
        "cpu_s": sampler.cpu,
        "samples": sampler.samples,
        "phases_s": {phase: sampler.seconds.get(phase, 0.0) for phase in PHASES},
        "phases_cpu_s": {phase: sampler.cpu_seconds.get(phase, 0.0) for phase in PHASES},
        "report_timings_s": timings,
    }


def table(rows: list[dict], startup: float) -> str:
    """Per phase and model: wall seconds, CPU seconds (process, all threads), share of CPU."""
    header = ["phase", *(f"{r['model']} wall / CPU s" for r in rows), "share of all CPU"]
    total_cpu = sum(r["cpu_s"] for r in rows)
    body = [
        ["startup (fresh interpreter, once per command; wall)", *[f"{startup:.2f}"] * len(rows), ""]
    ]
    for phase in PHASES:
        pairs = [(r["phases_s"][phase], r["phases_cpu_s"][phase]) for r in rows]
        share = sum(cpu for _, cpu in pairs) / total_cpu if total_cpu else 0.0
        body.append([phase, *(f"{w:.3f} / {c:.3f}" for w, c in pairs), f"{100 * share:.1f} %"])
    body.append(["analyze in all", *(f"{r['wall_s']:.2f} / {r['cpu_s']:.2f}" for r in rows), ""])
    per_unit = [
        f"{r['cpu_s'] / r['units']:.3f} / {r['phases_cpu_s']['optimization'] / r['units']:.3f}"
        for r in rows
    ]
    body.append(["per unit, CPU s: all / optimization", *per_unit, ""])
    return harness.markdown_table(header, body)


def main(argv: list[str] | None = None) -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="model file stems")
    parser.add_argument("--units", type=int, default=10, help="units of logits per model")
    parser.add_argument("--interval", type=float, default=0.002, help="seconds between samples")
    parser.add_argument("--name", default="phases", help="results file name")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    startup = startup_seconds()
    rows = [audit_phases(name, args.units, args.interval) for name in args.models]
    options = f"--units {args.units} --threads {args.threads} --name {args.name}"
    load = " / ".join(f"{value:.1f}" for value in harness.os.getloadavg())
    text = "\n\n".join(
        [
            "# Where a small audit's time goes",
            harness.command("phases", options),
            harness.machine_line(),
            f"Load average (1 / 5 / 15 min) at the end: {load}.",
            "One `analyze` per model at its defaults (no time budget, seed 0), sampled every "
            f"{args.interval * 1000:g} ms (`benchmarks/phases.py` says which functions make a "
            "phase). Wall seconds, and CPU seconds of the process (all threads) in the same "
            "phase: the load of other jobs stretches wall time far more than CPU time.",
            table(rows, startup),
        ]
    )
    print(text)
    harness.write_results(args.out, args.name, text, {"startup_s": startup, "rows": rows})


if __name__ == "__main__":
    main()
