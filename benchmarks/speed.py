"""Speed benchmark: engine step time vs a native-torch loop, batching, import, cross-check, memory.

- step time: the engine (standard and decoupled(0.3) rows) vs plain projected gradient ascent
  written natively in torch on the same architecture and weights (the digits CNNs rebuilt
  from ``models/make_digits_cnns.py`` with the ONNX initializers), same batch of 64 rows;
- 64 units batched in one call vs one row at a time (``batch_size=1``): units per second;
- import time: ``import onnx_am`` in a fresh interpreter and ``import_onnx`` per model;
- the onnxruntime cross-check's share of a run;
- peak memory (VmHWM) of a ResNet-50-sized model (torchvision ``resnet50(weights=None)``,
  seeded, exported to ONNX in a temporary folder) at batch 16, engine vs native, each in its
  own fresh process.

Run (from the repository root)::

    python -m benchmarks.speed            # a few minutes on 2 CPU cores (ResNet-50 included)
    python -m benchmarks.speed --quick    # digits only, fewer steps

Writes ``benchmarks/results/speed.md`` and ``speed.json`` (``speed_quick.*`` with --quick).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.harness import (
    command,
    export_resnet50,
    machine,
    machine_line,
    markdown_table,
    model_path,
    native_digits,
    parser,
    peak_rss_mib,
    resnet50,
    run_child,
    write_results,
)
from onnx_am import import_onnx
from onnx_am.engine.maximizer import AMConfig, maximize

LR = 0.1
REPEATS = 3
CLASSES = 8
RESTARTS = 8


class StepClock:
    """A progress callback that records when each step finished."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def __call__(self, done: int, total: int, info: object = None) -> None:
        self.stamps.append(time.perf_counter())

    def per_step(self) -> float:
        """Mean seconds per step between the first and the last callback."""
        if len(self.stamps) < 2:
            return float("nan")
        return (self.stamps[-1] - self.stamps[0]) / (len(self.stamps) - 1)


def native_ascent(
    model: torch.nn.Module, x: torch.Tensor, units: torch.Tensor, steps: int
) -> float:
    """Plain projected gradient ascent on ``model(x)[i, units[i]]``; seconds per step."""
    x = x.clone()
    started = time.perf_counter()
    for _ in range(steps):
        x.requires_grad_(True)
        objective = model(x).gather(1, units[:, None]).sum()
        (grad,) = torch.autograd.grad(objective, x)
        with torch.no_grad():
            x = (x + LR * grad).clamp_(-1.0, 1.0)
    return (time.perf_counter() - started) / steps


def engine_run(imported, targets, methods, steps, **config) -> tuple[object, StepClock]:
    """One engine call with a step clock attached."""
    clock = StepClock()
    settings = {"steps": steps, "lr": LR, "seed": 0, "restarts": 1, **config}
    report = maximize(imported, targets, methods, config=AMConfig(**settings), progress=clock)
    return report, clock


def step_time(name: str, steps: int) -> list[dict]:
    """Engine (standard, decoupled(0.3)) vs native ms/step on 64 rows of ``name``."""
    imported = import_onnx(str(model_path(name)))
    native = native_digits(name)
    targets = [f"{imported.output_names[0]}:{i}" for i in range(CLASSES)]
    units = torch.arange(CLASSES).repeat_interleave(RESTARTS)
    x = torch.empty(len(units), 1, 8, 8).uniform_(
        -0.1, 0.1, generator=torch.Generator().manual_seed(0)
    )
    native_ascent(native, x, units, 3)  # warm-up
    native_s = min(native_ascent(native, x, units, steps) for _ in range(REPEATS))
    rows = [
        {"model": name, "loop": "native torch", "ms_per_step": 1e3 * native_s, "vs_native": 1.0}
    ]
    for method in ("standard", "decoupled(0.3)", "proxy(0.3)"):
        engine_run(imported, targets, [method], 3, restarts=RESTARTS, crosscheck=False)  # warm-up
        per_step = min(
            engine_run(imported, targets, [method], steps, restarts=RESTARTS, crosscheck=False)[
                1
            ].per_step()
            for _ in range(REPEATS)
        )
        rows.append(
            {
                "model": name,
                "loop": f"engine {method}",
                "ms_per_step": 1e3 * per_step,
                "vs_native": per_step / native_s,
            }
        )
    return rows


def unit_targets64(imported) -> list[str]:
    """10 classes + channels of the rectifier outputs, 64 targets in all."""
    targets = [f"{imported.output_names[0]}:{i}" for i in range(10)]
    probe = torch.zeros((1, *imported.input.sample_shape))
    for name in reversed(list(imported.tensor_map)):
        if "Relu_output" not in name or len(targets) >= 64:
            continue
        (value,) = imported.run(probe, names=[name])
        if value.dim() == 4:
            take = min(value.shape[1], 64 - len(targets))
            targets += [f"{name}:{c}" for c in range(take)]
    return targets


def batching(name: str, steps: int) -> list[dict]:
    """64 units in one batch vs ``batch_size=1`` (one row at a time)."""
    imported = import_onnx(str(model_path(name)))
    targets = unit_targets64(imported)
    rows = []
    for mode, batch_size in (("batched (64 rows / step)", 64), ("one at a time (batch_size=1)", 1)):
        started = time.perf_counter()
        report, _ = engine_run(
            imported, targets, ["standard"], steps, batch_size=batch_size, crosscheck=False
        )
        seconds = report.timings.get("optimize", time.perf_counter() - started)
        rows.append(
            {
                "model": name,
                "mode": mode,
                "units": len(targets),
                "steps": steps,
                "seconds": seconds,
                "units_per_s": len(targets) / seconds,
            }
        )
    return rows


def phases(name: str, steps: int) -> list[dict]:
    """Seconds per phase of one cross-checked run (engine's own timings)."""
    imported = import_onnx(str(model_path(name)))
    targets = [f"{imported.output_names[0]}:{i}" for i in range(CLASSES)]
    started = time.perf_counter()
    report, _ = engine_run(
        imported, targets, ["standard"], steps, restarts=RESTARTS, crosscheck=True
    )
    wall = time.perf_counter() - started
    timings = {k: v for k, v in report.timings.items() if k != "total"}
    timings["other (outside the engine's phases)"] = max(0.0, wall - sum(timings.values()))
    return [
        {"model": name, "phase": phase, "seconds": s, "share": s / wall}
        for phase, s in timings.items()
    ] + [{"model": name, "phase": "total (wall)", "seconds": wall, "share": 1.0}]


def import_times(models: list[str]) -> list[dict]:
    """In a fresh interpreter: ``import onnx_am``, then the first ``import_onnx``; then warm."""
    code = (
        "import sys, time; t = time.perf_counter(); import onnx_am; a = time.perf_counter() - t; "
        "t = time.perf_counter(); onnx_am.import_onnx(sys.argv[1]); "
        "print(a, time.perf_counter() - t)"
    )
    first = str(model_path(models[0]))
    done = subprocess.run(
        [sys.executable, "-c", code, first], capture_output=True, text=True, check=True
    )
    package_s, first_s = (float(v) for v in done.stdout.split()[-2:])
    rows = [
        {"what": "import onnx_am (fresh interpreter)", "seconds": package_s},
        {"what": f"first import_onnx({models[0]}.onnx) in that interpreter", "seconds": first_s},
    ]
    for name in models:
        started = time.perf_counter()
        import_onnx(str(model_path(name)))
        seconds = time.perf_counter() - started
        rows.append({"what": f"import_onnx({name}.onnx), warm process", "seconds": seconds})
    return rows


def child(args: list[str]) -> dict:
    """The ResNet-50 measurements, each run in its own process so VmHWM is its own."""
    mode = args[0]
    if mode == "export":
        export_resnet50(args[1])
        return {"mode": "export", "peak_rss_mib": peak_rss_mib()}
    steps, batch = int(args[2]), int(args[3])
    if mode == "native":
        units = torch.arange(batch)
        x = torch.empty(batch, 3, 224, 224).uniform_(
            -0.1, 0.1, generator=torch.Generator().manual_seed(0)
        )
        per_step = native_ascent(resnet50(), x, units, steps)
        return {
            "mode": "native torch",
            "rows": batch,
            "steps": steps,
            "s_per_step": per_step,
            "peak_rss_mib": peak_rss_mib(),
        }
    started = time.perf_counter()
    imported = import_onnx(args[1])
    import_s = time.perf_counter() - started
    targets = [f"logits:{i}" for i in range(batch // 2)]
    report, clock = engine_run(
        imported, targets, ["standard", "decoupled(0.3)"], steps, batch_size=batch, crosscheck=True
    )
    return {
        "mode": "engine standard + decoupled(0.3), cross-check on",
        "rows": batch,
        "steps": steps,
        "s_per_step": report.timings.get("optimize", float("nan")) / steps,
        "import_s": import_s,
        "timings": report.timings,
        "peak_rss_mib": peak_rss_mib(),
    }


def in_child(args: list[str]) -> dict:
    """Run :func:`child` in a fresh interpreter (with this process's torch threads)."""
    return run_child("benchmarks.speed", args, torch.get_num_threads())


def resnet_rows(steps: int, batch: int, log=print) -> list[dict]:
    """Export ResNet-50 once to a temporary folder, then measure engine and native."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "resnet50.onnx")
        started = time.perf_counter()
        in_child(["export", path])
        log(f"  resnet50 exported in {time.perf_counter() - started:.0f} s")
        for mode in ("engine", "native"):
            rows.append(in_child([mode, path, str(steps), str(batch)]))
            row = rows[-1]
            log(f"  resnet50 {mode}: {row['s_per_step']:.2f} s/step, {row['peak_rss_mib']:.0f} MiB")
    return rows


def render(info: dict, results: dict, command: str) -> str:
    """The markdown report."""
    out = [
        "# Speed benchmark",
        "",
        machine_line(info),
        "",
        f"Command: `{command}`",
        "",
        f"## Step time, {CLASSES * RESTARTS} rows ({CLASSES} classes x {RESTARTS} restarts), "
        "projected gradient ascent",
        "",
        "Engine: seconds between its first and last progress callbacks per step (starts, "
        f"baselines and cross-check excluded), best of {REPEATS} runs. Native: the same "
        "architecture written in torch with the same weights, same batch, same update, best of "
        f"{REPEATS}.",
        "",
        markdown_table(
            ["model", "loop", "ms / step", "vs native"],
            [
                [r["model"], r["loop"], f"{r['ms_per_step']:.2f}", f"{r['vs_native']:.2f}x"]
                for r in results["steps"]
            ],
        ),
        "",
        "## 64 units: batched vs one at a time (standard, 1 restart, engine's `optimize` time)",
        "",
        markdown_table(
            ["model", "mode", "steps", "seconds", "units / s"],
            [
                [
                    r["model"],
                    r["mode"],
                    r["steps"],
                    f"{r['seconds']:.2f}",
                    f"{r['units_per_s']:.1f}",
                ]
                for r in results["batching"]
            ],
        ),
        "",
        f"## Where the time of one run goes ({CLASSES * RESTARTS} rows, standard, cross-check on)",
        "",
        markdown_table(
            ["model", "phase", "seconds", "share"],
            [
                [r["model"], r["phase"], f"{r['seconds']:.3f}", f"{100 * r['share']:.1f} %"]
                for r in results["phases"]
            ],
        ),
        "",
        "## Import time",
        "",
        markdown_table(
            ["what", "seconds"], [[r["what"], f"{r['seconds']:.2f}"] for r in results["imports"]]
        ),
        "",
    ]
    if results.get("resnet"):
        out += [
            "## ResNet-50 (torchvision, weights=None, seeded), batch 16, each in a fresh process",
            "",
            "Peak RSS = VmHWM of that process (model, import, baselines, steps, cross-check).",
            "",
            markdown_table(
                ["loop", "rows", "steps", "s / step", "import s", "peak RSS MiB"],
                [
                    [
                        r["mode"],
                        r["rows"],
                        r["steps"],
                        f"{r['s_per_step']:.2f}",
                        f"{r['import_s']:.1f}" if "import_s" in r else "-",
                        f"{r['peak_rss_mib']:.0f}",
                    ]
                    for r in results["resnet"]
                ],
            ),
            "",
        ]
    return "\n".join(out)


def measure(quick: bool, log=print) -> dict:
    """All measurements; ``quick`` skips ResNet-50 and the deep model."""
    steps = 16 if quick else 64
    models = ["digits_relu"] if quick else ["digits_relu", "digits_deep_relu"]
    results = {"steps": []}
    for name in models:
        results["steps"] += step_time(name, steps)
        log(f"  step time {name}: done")
    results["batching"] = batching(models[0], steps)
    results["phases"] = phases(models[0], steps)
    results["imports"] = import_times(models)
    results["resnet"] = [] if quick else resnet_rows(steps=3, batch=16, log=log)
    return results


def main(argv: list[str] | None = None) -> None:
    options = parser(__doc__, child=True)
    options.add_argument("--quick", action="store_true", help="digits only, fewer steps")
    args = options.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child)))
        return
    info = machine()
    print(machine_line(info))
    results = measure(args.quick)
    threads = f"--threads {args.threads}" if args.threads != 1 else ""
    run_as = command("speed", "--quick" if args.quick else "", threads)
    text = render(info, results, run_as)
    name = "speed_quick" if args.quick else "speed"
    write_results(args.out, name, text, {"machine": info, "command": run_as, **results})
    print(text)


if __name__ == "__main__":
    main()
