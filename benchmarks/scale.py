"""Scale-out benchmark: units per second of ``analyze`` with 1 vs 2 Ray workers, and the cost
of the Ray path with one worker against the plain single process.

Two models, each audited three times in this one run with the same settings:

* ``single``: ``analyze`` in this process (the default path, no Ray);
* ``ray x1``: a local Ray instance started for the run, with one worker;
* ``ray x2``: the same with two workers.

Every process (this one, each worker) runs ``--threads`` torch threads (default 1), so the
single process and one worker do the same work with the same threads, and two workers use
twice the cores of one.

The small model is ``models/digits_relu.onnx`` (23 k parameters, 8x8 input), its logits and
the units of two hidden layers with the default methods; the mid-size one a seeded random
torchvision ResNet-18 (11.7 M parameters) at 3x32x32, exported in a temporary folder, its
first logits with standard and decoupled(0.3). For each run: Ray's start (``ray.init``), the
workers' start (a process each, importing torch and onnx-am), the optimize phase (the chunks,
including each worker's import of the model from its bytes) and the run end to end (all of
that plus the driver's import and parity check). Units/s are over the optimize
phase. Plots and pages are not drawn: they are the same work in the driver on every path.

Run (from the repository root; it takes minutes)::

    flock /tmp/heavy.lock python -m benchmarks.scale        # --quick: a smoke run

Writes ``benchmarks/results/scale.md`` and ``scale.json``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

import onnx_am.audit.chunks as chunks_module
from benchmarks.harness import (
    MODELS,
    command,
    export_classifier,
    machine,
    machine_line,
    markdown_table,
    parser,
    write_results,
)
from onnx_am.audit.analyze import AnalyzeOptions, analyze

SMALL = {
    "name": "digits_relu (23 k params)",
    "targets": ("logits", "/classifier/relu_fc1/Relu_output_0", "/features/relu3/Relu_output_0"),
    "methods": (),
    "steps": 256,
    "restarts": 2,
}
MID = {
    "name": "ResNet-18 3x32x32 (11.7 M params)",
    "targets": ("logits:0-127",),
    "methods": ("standard", "decoupled(0.3)"),
    "steps": 16,
    "restarts": 1,
}
QUICK = {"steps": 4, "restarts": 1}


def export_resnet18(path: Path) -> None:
    """A seeded random ResNet-18 at 3x32x32 with a dynamic batch (no download)."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    export_classifier(net, (3, 32, 32), path)


def measure(
    model: Path, options: AnalyzeOptions, out: Path, workers: int | None, threads: int
) -> dict:
    """One audit; ``workers`` None runs in this process, else on a local Ray instance; every
    process (this one, each worker) uses ``threads`` torch threads."""
    executor, ray_start, workers_start = None, 0.0, 0.0
    started = time.perf_counter()
    if workers is not None:
        from onnx_am.audit.ray_executor import RayExecutor

        executor = RayExecutor(workers=workers, threads=threads)
        executor.start()
        ray_start = time.perf_counter() - started
        executor.start_workers()
        workers_start = time.perf_counter() - started - ray_start
    try:
        report = analyze(model, options, out, executor=executor)
    finally:
        if executor is not None:
            executor.close()
    total = time.perf_counter() - started - report.doc["timings"]["render"]
    units = len({r.target for r in report.results})
    optimize = report.doc["timings"]["optimize"]
    values = [(r.target, r.method, r.activation) for r in report.results]
    return {
        "workers": workers,
        "units": units,
        "ray_start_s": ray_start,
        "workers_start_s": workers_start,
        "optimize_s": optimize,
        "total_s": total,
        "units_per_s": units / optimize,
        "values": values,
    }


def run_model(spec: dict, model: Path, quick: bool, folder: Path, threads: int) -> dict:
    settings = {k: spec[k] for k in ("steps", "restarts")} | (QUICK if quick else {})
    targets = spec["targets"]
    options = AnalyzeOptions.of(
        targets=targets[:1],
        layers=targets[1:],
        methods=spec["methods"],
        force=True,
        **settings,
    )
    runs = {}
    for label, workers in (("single", None), ("ray x1", 1), ("ray x2", 2)):
        out = folder / label.replace(" ", "_")
        runs[label] = measure(model, options, out, workers, threads)
        print(f"  {label}: {runs[label]['optimize_s']:.1f} s optimize", flush=True)
    same = all(run["values"] == runs["single"]["values"] for run in runs.values())
    for run in runs.values():
        del run["values"]
    return {"model": spec["name"], "settings": settings, "runs": runs, "same_values": same}


def table(results: list[dict]) -> str:
    header = [
        "model",
        "run",
        "units",
        "Ray start (s)",
        "workers start (s)",
        "optimize (s)",
        "end to end (s)",
        "units/s",
        "vs single, optimize",
        "vs single, end to end",
    ]
    rows = []
    for result in results:
        single = result["runs"]["single"]
        for label, run in result["runs"].items():
            rows.append(
                [
                    result["model"],
                    label,
                    run["units"],
                    f"{run['ray_start_s']:.1f}",
                    f"{run['workers_start_s']:.1f}",
                    f"{run['optimize_s']:.1f}",
                    f"{run['total_s']:.1f}",
                    f"{run['units_per_s']:.2f}",
                    f"{run['optimize_s'] / single['optimize_s']:.2f}x",
                    f"{run['total_s'] / single['total_s']:.2f}x",
                ]
            )
    return markdown_table(header, rows)


def ratios(results: list[dict]) -> str:
    lines = []
    for result in results:
        runs = result["runs"]
        speedup = runs["ray x2"]["units_per_s"] / runs["ray x1"]["units_per_s"]
        overhead = runs["ray x1"]["optimize_s"] / runs["single"]["optimize_s"] - 1
        whole = runs["ray x1"]["total_s"] / runs["single"]["total_s"] - 1
        lines.append(
            f"- {result['model']}: 2 workers / 1 worker = **{speedup:.2f}x** units/s; Ray with "
            f"one worker vs the single process: **{overhead:+.1%}** in the optimize phase, "
            f"{whole:+.1%} end to end (Ray's and the workers' start included); values "
            "identical in all three "
            f"runs: {'yes' if result['same_values'] else 'NO'}."
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args_parser = parser(__doc__, threads=1)
    args_parser.add_argument("--quick", action="store_true", help="a smoke run: few steps")
    args_parser.add_argument("--only", choices=("small", "mid"), help="one model only")
    args = args_parser.parse_args(argv)
    chunks_module.render_plots = lambda *args: []  # the same driver-side work on every path
    torch.set_num_threads(args.threads)
    info = machine()
    print(machine_line(info), flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        specs = []
        if args.only in (None, "small"):
            specs.append((SMALL, MODELS / "digits_relu.onnx"))
        if args.only in (None, "mid"):
            export_resnet18(folder / "resnet18.onnx")
            specs.append((MID, folder / "resnet18.onnx"))
        for spec, model in specs:
            print(spec["name"], flush=True)
            results.append(run_model(spec, model, args.quick, folder, args.threads))
    flags = [
        "--quick" if args.quick else "",
        f"--only {args.only}" if args.only else "",
        f"--threads {args.threads}" if args.threads != 1 else "",
    ]
    text = "\n\n".join(
        [
            "# Scale-out: 1 vs 2 Ray workers, and the Ray path vs one process",
            f"`{command('scale', *flags)}` (under `flock /tmp/heavy.lock`). "
            f"{machine_line(info)}. The machine was shared with other work while this ran; "
            "ratios are within this one run.",
            table(results),
            ratios(results),
        ]
    )
    path = write_results(args.out, "scale", text, {"machine": info, "results": results})
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
