"""How long import and parity take for a ~25M-parameter CNN (torchvision ResNet-50).

Exports ``resnet50(weights=None)`` (seeded, nothing downloads) at 1x3x224x224 with the
legacy and the dynamo exporter into a temporary directory, then times ``import_onnx`` and
``check_parity`` (4 random samples by default). Prints a table and the machine.

    python benchmarks/import_speed.py [--repeats 3] [--samples 4] [--exporters legacy,dynamo]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import onnx
import torch
import torchvision

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--exporters", default="legacy,dynamo")
    args = parser.parse_args()
    print(
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    print(f"repeats {args.repeats} (median), parity samples {args.samples}, input 1x3x224x224")
    print(
        f"{'exporter':<8} {'params(M)':>9} {'nodes':>6} {'import s':>9} {'parity s':>9} "
        f"{'max|diff|':>10} passed batch"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.exporters.split(","):
            row = measure(export(kind, Path(tmp)), args.repeats, args.samples)
            print(
                f"{kind:<8} {row['params_m']:>9.1f} {row['nodes']:>6} {row['import_s']:>9.2f} "
                f"{row['parity_s']:>9.2f} {row['max_abs_diff']:>10.2e} {row['passed']!s:>6} "
                f"{row['batch']}"
            )


if __name__ == "__main__":
    main()
