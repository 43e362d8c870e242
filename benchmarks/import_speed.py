"""How long import and parity take for a ~25M-parameter CNN (torchvision ResNet-50).

Exports ``resnet50(weights=None)`` (seeded, nothing downloads) at 1x3x224x224 with the
legacy and the dynamo exporter into a temporary directory, then times ``import_onnx`` and
``check_parity`` (4 random samples by default). Prints a table and the machine and writes
them to ``benchmarks/results/import_speed.md`` and ``import_speed.json``.

    python -m benchmarks.import_speed [--repeats 3] [--samples 4] [--exporters legacy,dynamo]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import onnx
import torch
import torchvision

from benchmarks import harness
from onnx_am import check_parity, import_onnx


def export(kind: str, folder: Path) -> Path:
    """Export a seeded ResNet-50 with the given exporter; returns the .onnx path."""
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    path = folder / f"resnet50_{kind}.onnx"
    kwargs = {"input_names": ["input"], "output_names": ["logits"]}
    x = (torch.zeros(1, 3, 224, 224),)
    if kind == "legacy":
        torch.onnx.export(model, x, str(path), dynamo=False, opset_version=17, **kwargs)
    else:
        torch.onnx.export(
            model, x, str(path), dynamo=True, opset_version=18, external_data=True, **kwargs
        )
    return path


def measure(path: Path, repeats: int, samples: int) -> dict:
    imports, parities, result = [], [], None
    for _ in range(repeats):
        start = time.perf_counter()
        imported = import_onnx(path)
        imports.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = check_parity(imported, samples=samples)
        parities.append(time.perf_counter() - start)
    params = sum(p.numel() for p in imported.module.parameters()) + sum(
        b.numel() for b in imported.module.buffers()
    )
    return {
        "import_s": statistics.median(imports),
        "parity_s": statistics.median(parities),
        "max_abs_diff": result.max_abs_diff,
        "passed": result.passed,
        "params_m": params / 1e6,
        "nodes": len(onnx.load(str(path), load_external_data=False).graph.node),
        "batch": imported.batch.mode,
    }


def main(argv: list[str] | None = None) -> None:
    options = harness.parser(__doc__, threads=torch.get_num_threads())
    options.add_argument("--repeats", type=int, default=3)
    options.add_argument("--samples", type=int, default=4)
    options.add_argument("--exporters", default="legacy,dynamo")
    args = options.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = harness.machine()
    print(harness.machine_line(info))
    print(f"repeats {args.repeats} (median), parity samples {args.samples}, input 1x3x224x224")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.exporters.split(","):
            rows.append(
                {"exporter": kind, **measure(export(kind, Path(tmp)), args.repeats, args.samples)}
            )
            done = rows[-1]
            print(f"  {kind}: import {done['import_s']:.2f} s, parity {done['parity_s']:.2f} s")
    run_as = harness.command(
        "import_speed",
        f"--repeats {args.repeats} --samples {args.samples} --exporters {args.exporters}",
        f"--threads {args.threads}",
    )
    table = harness.markdown_table(
        [
            "exporter",
            "params (M)",
            "nodes",
            "import s",
            "parity s",
            "max abs diff",
            "passed",
            "batch",
        ],
        [
            [
                r["exporter"],
                f"{r['params_m']:.1f}",
                r["nodes"],
                f"{r['import_s']:.2f}",
                f"{r['parity_s']:.2f}",
                f"{r['max_abs_diff']:.2e}",
                r["passed"],
                r["batch"],
            ]
            for r in rows
        ],
    )
    text = "\n".join(
        [
            "# Import speed: ResNet-50 (torchvision, weights=None, seeded), 1x3x224x224",
            "",
            harness.machine_line(info),
            "",
            f"Command: `{run_as}` (median of {args.repeats}; {args.samples} parity samples)",
            "",
            table,
        ]
    )
    print(text)
    harness.write_results(
        args.out, "import_speed", text, {"machine": info, "command": run_as, "rows": rows}
    )


if __name__ == "__main__":
    main()
