"""The engine on a GPU: its step against a native torch loop, and ResNet-50 units per minute.

    python -m benchmarks.gpu [--device cuda] [--rows 64] [--steps 20] [--repeat 3]
        [--units 64] [--audit-steps 256] [--model resnet50|tiny] [--out benchmarks/results]

Measures, in one run on one device:

1. seconds per step of ``--rows`` rows of ResNet-50 (torchvision, random weights, 224x224):
   the engine (``standard`` and ``decoupled(0.3)`` rows, imported from ONNX) against a
   native torch loop on the torchvision module (``nn.ReLU``; decoupled: a custom autograd
   ReLU whose backward passes ``0.3`` of the gradient where the input is negative), same
   batch, same normalized gradient step, same projection. Loops alternate, one of each per
   repetition; the ratio is within the run.
2. units per minute of a full ``analyze`` (default methods, ``--audit-steps`` steps, 3
   restarts, ``--units`` logits, onnxruntime cross-check included, time budget off).

With ``--model tiny --device cpu`` it runs in seconds on any machine (a smoke test of the
script, not a measurement). Results go to ``gpu.json`` and ``gpu.md`` under ``--out``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.harness import markdown_table, parser, write_results
from onnx_am import import_onnx
from onnx_am.audit.analyze import AnalyzeOptions, analyze
from onnx_am.engine.maximizer import AMConfig, maximize

BETA = 0.3


class _DecoupledReLU(torch.autograd.Function):
    """ReLU forward; backward passes ``BETA`` times the gradient where the input is negative."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.where(x > 0, 1.0, BETA).to(grad.dtype)


class DecoupledReLU(torch.nn.Module):
    def forward(self, x):
        return _DecoupledReLU.apply(x)


def make_model(name: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """The native network with seeded random weights, and one sample's shape."""
    generator = torch.Generator().manual_seed(0)
    if name == "resnet50":
        import torchvision

        model = torchvision.models.resnet50(weights=None)
        shape = (3, 224, 224)
    else:
        model = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(4),
            torch.nn.Flatten(),
            torch.nn.Linear(128, 16),
        )
        shape = (3, 16, 16)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model.eval(), shape


def decoupled_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy with every ``nn.ReLU`` replaced by :class:`DecoupledReLU`."""
    import copy

    clone = copy.deepcopy(model)
    for child in list(clone.modules()):
        for attr, sub in list(child.named_children()):
            if isinstance(sub, torch.nn.ReLU):
                setattr(child, attr, DecoupledReLU())
    return clone


def export(model: torch.nn.Module, shape, path: Path) -> Path:
    torch.onnx.export(
        model,
        torch.zeros(1, *shape),
        str(path),
        dynamo=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    return path


def native_seconds(model, shape, rows: int, steps: int, device: str) -> float:
    """Seconds per step of a plain normalized-gradient ascent on ``rows`` logits."""
    generator = torch.Generator().manual_seed(1)
    x = (torch.rand((rows, *shape), generator=generator) * 0.2 - 0.1).to(device)
    units = torch.arange(rows, device=device) % 10
    index = torch.arange(rows, device=device)
    _sync(device)
    tic = time.perf_counter()
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        value = model(x)[index, units]
        (grad,) = torch.autograd.grad(value.sum(), x)
        rms = grad.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12)
        x = (x + 0.1 * grad / rms.view(-1, 1, 1, 1)).clamp(-1, 1)
        with torch.no_grad():  # the engine measures each point's true value too
            model(x)
    _sync(device)
    return (time.perf_counter() - tic) / steps


def engine_seconds(imported, method: str, rows: int, steps: int, device: str) -> float:
    """Seconds per step of the engine on ``rows`` rows (logits 0-9, one method)."""
    targets = [f"logits:{u}" for u in range(min(10, rows))]
    restarts = max(1, rows // len(targets))
    config = AMConfig.of(
        steps=steps,
        restarts=restarts,
        device=device,
        normalize_grad=True,
        crosscheck=False,
        batch_size=rows,
        baseline_corners=0,
    )
    stamps: list[float] = []

    def progress(done, total, info):
        stamps.append(time.perf_counter())

    _sync(device)
    maximize(imported, targets, [method], config, progress=progress)
    _sync(device)
    if len(stamps) < 3:
        return float("nan")
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def step_table(args, model, shape, imported) -> list[dict]:
    native = {"standard": model.to(args.device), f"decoupled({BETA:g})": None}
    native[f"decoupled({BETA:g})"] = decoupled_copy(model).to(args.device)
    rows = []
    for method, net in native.items():
        engine, plain = [], []
        for _ in range(args.repeat):
            engine.append(engine_seconds(imported, method, args.rows, args.steps, args.device))
            plain.append(native_seconds(net, shape, args.rows, args.steps, args.device))
        e, n = statistics.median(engine), statistics.median(plain)
        rows.append(
            {
                "method": method,
                "rows": args.rows,
                "engine_s_per_step": e,
                "native_s_per_step": n,
                "ratio": e / n,
            }
        )
    model.to("cpu")
    return rows


def audit_rate(args, path: Path) -> dict:
    """Units per minute of a whole ``analyze`` (default methods, 3 restarts)."""
    options = AnalyzeOptions.of(
        steps=args.audit_steps,
        max_units=args.units,
        device=args.device,
        time_budget=None,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        report = analyze(path, options, Path(tmp) / "report")
        seconds = time.perf_counter() - tic
    units = len(report.doc["settings"]["targets"])
    return {
        "units": units,
        "steps": args.audit_steps,
        "restarts": 3,
        "seconds": seconds,
        "units_per_minute": units / seconds * 60,
        "timings": report.doc["timings"],
        "batch_size": report.doc["plan"]["batch_size"],
        "agree": sum(1 for r in report.results if r.agrees),
        "results": len(report.results),
    }


def main(argv: list[str] | None = None) -> dict:
    cli = parser(__doc__)
    cli.add_argument("--device", default="cuda")
    cli.add_argument("--model", choices=["resnet50", "tiny"], default="resnet50")
    cli.add_argument("--rows", type=int, default=64)
    cli.add_argument("--steps", type=int, default=20)
    cli.add_argument("--repeat", type=int, default=3)
    cli.add_argument("--units", type=int, default=64)
    cli.add_argument("--audit-steps", type=int, default=256)
    args = cli.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing measured (use --device cpu --model tiny for a smoke run)")
        return {}
    model, shape = make_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        path = export(model, shape, Path(tmp) / f"{args.model}.onnx")
        imported = import_onnx(path)
        steps = step_table(args, model, shape, imported)
        audit = audit_rate(args, path)
    name = torch.cuda.get_device_name(args.device) if args.device != "cpu" else "cpu"
    result = {"device": name, "model": args.model, "steps": steps, "audit": audit}
    table = markdown_table(
        ["method", "rows", "engine s/step", "native s/step", "engine / native"],
        [
            [
                row["method"],
                row["rows"],
                f"{row['engine_s_per_step']:.4f}",
                f"{row['native_s_per_step']:.4f}",
                f"{row['ratio']:.2f}",
            ]
            for row in steps
        ],
    )
    text = "\n".join(
        [
            f"# GPU: engine vs native torch, analyze units per minute ({name}, {args.model})",
            "",
            table,
            "",
            f"analyze: {audit['units']} units, {audit['steps']} steps, 3 restarts, default "
            f"methods: {audit['seconds']:.1f} s = {audit['units_per_minute']:.1f} units/min "
            f"({audit['agree']}/{audit['results']} results agree with onnxruntime)",
        ]
    )
    print(text)
    suffix = "" if args.model == "resnet50" else "_" + args.model
    write_results(args.out, f"gpu{suffix}", text, result)
    return result


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
