"""Memory benchmark: the automatic chunk size on a ResNet-50 at 1x3x224x224.

torchvision ``resnet50(weights=None)``, seeded, exported to ONNX in a temporary folder (as in
``benchmarks.speed``). Prints the bytes one row keeps for the backward
(:func:`onnx_am.engine.memory.activation_bytes_per_row`: standard rows alone, and one row of
each of standard and decoupled(0.3) as the engine measures a mixed chunk), the memory budget and the
automatic chunk size on this machine; then the peak RSS (VmHWM) of a 2-step
``maximize`` of 64 rows (32 classes x standard + decoupled(0.3)) with the
automatic chunk size and with ``batch_size=64``, each in its own fresh process.

Run (from the repository root)::

    python -m benchmarks.memory           # several minutes on 2 CPU cores

Writes ``benchmarks/results/memory.md`` and ``memory.json``.
"""

from __future__ import annotations

import json
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
    parser,
    peak_rss_mib,
    run_child,
    write_results,
)
from onnx_am import import_onnx
from onnx_am.engine import memory
from onnx_am.engine.maximizer import AMConfig, maximize

STEPS = 2
CLASSES = 32
METHODS = ("standard", "decoupled(0.3)")
MIB = 1024**2


def rss_mib() -> float:
    """Current resident memory of this process in MiB (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def export(path: str) -> dict:
    """The seeded ResNet-50 as ONNX with a dynamic batch."""
    export_resnet50(path)
    return {"mode": "export"}


def row_bytes(path: str) -> dict:
    """Bytes per row (standard; standard + decoupled mixed), budget and automatic size."""
    from onnx_am.methods import STANDARD, GradientMethod
    from onnx_am.passes import decouple_rectifiers

    imported = import_onnx(path)
    shape = imported.input.sample_shape
    standard = memory.activation_bytes_per_row(imported.extractor(["logits"]), shape)
    rewrite = decouple_rectifiers(imported)
    runs = (STANDARD, GradientMethod("decoupled", 0.3))
    mixed = memory.activation_bytes_per_row(
        imported.extractor(["logits"], module=rewrite.module),
        shape,
        rows=len(runs),
        context=lambda: rewrite.control.rows(runs),
    )
    budget = memory.memory_budget("cpu")
    return {
        "mode": "row bytes",
        "standard_mib": standard / MIB,
        "mixed_mib": mixed / MIB,
        "budget_mib": budget / MIB,
        "auto_standard": memory.auto_batch_size(standard, budget),
        "auto_mixed": memory.auto_batch_size(mixed, budget),
    }


def run(path: str, batch_size: int | None, classes: int = CLASSES) -> dict:
    """A 2-step maximize of ``classes`` x 2 rows; peak RSS of this fresh process."""
    imported = import_onnx(path)
    before = rss_mib()
    config = AMConfig.of(steps=STEPS, restarts=1, seed=0, crosscheck=False, batch_size=batch_size)
    started = time.perf_counter()
    report = maximize(imported, [f"logits:0-{classes - 1}"], list(METHODS), config)
    return {
        "mode": "auto" if batch_size is None else f"batch_size={batch_size}",
        "rows": classes * len(METHODS),
        "chunk": report.settings["batch_size"],
        "seconds": time.perf_counter() - started,
        "rss_before_mib": before,
        "peak_rss_mib": peak_rss_mib(),
    }


def child(args: list[str]) -> dict:
    if args[0] == "export":
        return export(args[1])
    if args[0] == "rows":
        return row_bytes(args[1])
    return run(args[1], None if args[2] == "auto" else int(args[2]))


def in_child(args: list[str], threads: int) -> dict:
    """:func:`child` in a fresh interpreter."""
    return run_child("benchmarks.memory", args, threads)


def measure(threads: int, log=print) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "resnet50.onnx")
        in_child(["export", path], threads)
        rows = in_child(["rows", path], threads)
        log(f"  row bytes: {rows}")
        runs = []
        for size in ("auto", "64"):
            runs.append(in_child(["run", path, size], threads))
            log(f"  {runs[-1]}")
    return {"rows": rows, "runs": runs}


def render(info: dict, results: dict, command: str) -> str:
    rows = results["rows"]
    return "\n".join(
        [
            "# Memory benchmark: automatic chunk size, ResNet-50 1x3x224x224",
            "",
            machine_line(info),
            "",
            f"Command: `{command}`",
            "",
            f"Budget on this machine: {rows['budget_mib']:.0f} MiB "
            f"({memory.CPU_FRACTION:g} of MemTotal); safety factor {memory.SAFETY:g}.",
            "",
            markdown_table(
                ["rows measured", "MiB per row", "auto chunk size"],
                [
                    ["standard", f"{rows['standard_mib']:.1f}", rows["auto_standard"]],
                    [
                        "standard + decoupled(0.3) (what the engine measures here)",
                        f"{rows['mixed_mib']:.1f}",
                        rows["auto_mixed"],
                    ],
                ],
            ),
            "",
            f"## {STEPS}-step maximize, {CLASSES} classes x {' + '.join(METHODS)}, "
            "cross-check off, each in a fresh process",
            "",
            markdown_table(
                [
                    "batch size",
                    "rows",
                    "rows / chunk",
                    "seconds",
                    "RSS before MiB",
                    "peak MiB",
                    "(peak - before) / chunk MiB",
                ],
                [
                    [
                        r["mode"],
                        r["rows"],
                        r["chunk"],
                        f"{r['seconds']:.0f}",
                        f"{r['rss_before_mib']:.0f}",
                        f"{r['peak_rss_mib']:.0f}",
                        f"{(r['peak_rss_mib'] - r['rss_before_mib']) / r['chunk']:.1f}",
                    ]
                    for r in results["runs"]
                ],
            ),
            "",
            "The last column is the peak's growth per row of a chunk, to set against the "
            f"measured MiB per row times the safety factor {memory.SAFETY:g}.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__, child=True).parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child)))
        return
    info = machine()
    print(machine_line(info))
    results = measure(args.threads)
    run_as = command("memory", f"--threads {args.threads}" if args.threads != 1 else "")
    text = render(info, results, run_as)
    write_results(args.out, "memory", text, {"machine": info, "command": run_as, **results})
    print(text)


if __name__ == "__main__":
    main()
