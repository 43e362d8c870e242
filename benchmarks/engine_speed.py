"""Speed of the AM engine against a plain torch gradient-ascent loop on the same network.

    python benchmarks/engine_speed.py [--threads 1] [--steps 100] [--device cpu] [--repeat 3]

Prints the machine, then a table:

1. seconds per step, 64 rows in one batch: the engine (standard / decoupled / proxy) on the
   ONNX import of ``models/digits_relu.onnx`` versus a hand-written loop on the native torch
   ``SimpleCNN`` with the same weights (and the same loop on the converted graph, to separate
   the converter's cost from the engine's) (standard: ``nn.ReLU``; decoupled: a custom autograd
   ReLU). The engine's proxy rows do one more (no-grad) forward per step by design, to
   report the original network's value.
2. 64 units (``/classifier/relu_fc1/Relu_output_0:0-63``) batched vs one at a time, units/s.
3. the share of the onnxruntime cross-check in a full run.

Not a test; medians over ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import onnx
import torch
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnx_am import import_onnx  # noqa: E402
from onnx_am.engine import AMConfig, maximize  # noqa: E402

MODEL = ROOT / "models" / "digits_relu.onnx"
UNITS_64 = "/classifier/relu_fc1/Relu_output_0:0-63"


def native_cnn() -> torch.nn.Module:
    """The digits SimpleCNN from ``models/make_digits_cnns.py`` with the ONNX file's weights."""
    path = ROOT / "models" / "make_digits_cnns.py"
    spec = importlib.util.spec_from_file_location("make_digits_cnns", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.SimpleCNN(lambda _c: torch.nn.ReLU())
    initializers = onnx.load(MODEL).graph.initializer
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in initializers}
    net.load_state_dict(weights)
    return net.eval().requires_grad_(False)


def decoupled_cnn(beta: float) -> torch.nn.Module:
    """The native CNN with every ``nn.ReLU`` replaced by a decoupled ReLU."""
    net = native_cnn()
    for parent in (net.features, net.classifier):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.ReLU):
                setattr(parent, name, DecoupledReLU(beta))
    return net


class _DecoupledReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, beta):
        ctx.save_for_backward(x)
        ctx.beta = beta
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.where(x > 0, 1.0, ctx.beta), None


class DecoupledReLU(torch.nn.Module):
    def __init__(self, beta: float):
        super().__init__()
        self.beta = beta

    def forward(self, x):
        return _DecoupledReLU.apply(x, self.beta)


def native_loop(net, units: torch.Tensor, steps: int, lr: float, device: str) -> float:
    """Plain projected gradient ascent on logits; returns seconds per step."""
    generator = torch.Generator().manual_seed(0)
    x = ((torch.rand((len(units), 1, 8, 8), generator=generator) * 2 - 1) * 0.1).to(device)
    rows = torch.arange(len(units), device=device)
    _sync(device)
    tic = time.perf_counter()
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        objective = net(x)[rows, units].sum()
        (grad,) = torch.autograd.grad(objective, x)
        x = (x + lr * grad).clamp(-1, 1)
    _sync(device)
    return (time.perf_counter() - tic) / steps


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def engine_step_time(imported, targets, method: str, config: AMConfig) -> float:
    report = maximize(imported, targets, [method], config)
    return report.timings["optimize"] / config.steps


def median(fn, repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def machine(device: str) -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "-"
    return (
        f"machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op thread(s), python {platform.python_version()}, "
        f"device {device} ({gpu})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, steps, repeat = args.device, args.steps, args.repeat
    print(machine(device))
    imported = import_onnx(MODEL)
    # 64 rows: logits 0-7, 8 restarts each, in one chunk; the native loop does the same rows.
    targets = [f"logits:{i}" for i in range(8)]
    config = AMConfig(
        steps=steps, lr=0.05, restarts=8, batch_size=64, crosscheck=False, device=device
    )
    units = torch.arange(8, device=device).repeat_interleave(8)
    print(f"\n1. seconds per step, 64 rows in one batch ({steps} steps, median of {repeat})")
    print(f"{'loop':38s} {'ms/step':>9s} {'vs native':>10s}")
    net = native_cnn().to(device)
    native_std = median(lambda: native_loop(net, units, steps, 0.05, device), repeat)
    native_dec = median(
        lambda: native_loop(decoupled_cnn(0.3).to(device), units, steps, 0.05, device), repeat
    )
    graph = imported.extractor(["logits"])

    def logits(x):
        return graph(x)[0]

    converted = median(lambda: native_loop(logits, units, steps, 0.05, device), repeat)
    rows = [("native torch, nn.ReLU", native_std, native_std)]
    rows.append(("same loop on the onnx2torch graph", converted, native_std))
    rows.append(("native torch, decoupled ReLU(0.3)", native_dec, native_dec))
    references = {"standard": native_std, "decoupled(0.3)": native_dec, "proxy(0.3)": native_dec}
    for method, reference in references.items():
        seconds = median(lambda m=method: engine_step_time(imported, targets, m, config), repeat)
        rows.append((f"engine, {method}", seconds, reference))
    for label, seconds, reference in rows:
        print(f"{label:38s} {seconds * 1e3:9.3f} {seconds / reference:9.2f}x")

    print(f"\n2. 64 units of {UNITS_64.split(':')[0]}, decoupled(0.3), {steps} steps")
    print(f"{'mode':38s} {'seconds':>9s} {'units/s':>10s}")
    for label, batch in (("batched (64 rows per step)", 64), ("one at a time (batch_size=1)", 1)):
        one = AMConfig(steps=steps, restarts=1, batch_size=batch, crosscheck=False, device=device)
        report = maximize(imported, [UNITS_64], ["decoupled(0.3)"], one)
        seconds = report.timings["optimize"]
        print(f"{label:38s} {seconds:9.2f} {64 / seconds:10.1f}")

    print("\n3. share of the onnxruntime cross-check, 64 units x (standard, decoupled(0.3))")
    full = AMConfig(steps=steps, restarts=1, batch_size=64, crosscheck=True, device=device)
    timings = maximize(imported, [UNITS_64], ["standard", "decoupled(0.3)"], full).timings
    for phase in ("baselines", "starts", "optimize", "crosscheck", "total"):
        print(
            f"{phase:38s} {timings[phase]:9.3f} s {100 * timings[phase] / timings['total']:8.1f} %"
        )


if __name__ == "__main__":
    main()
