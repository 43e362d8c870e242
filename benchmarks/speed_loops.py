"""The loops :mod:`benchmarks.speed` times: native torch and the engine, on the same rows.

A model is a digits CNN from ``models/`` (the native network rebuilt from its maker with the
ONNX weights) or a torchvision network built in code with seeded random weights and exported
to ONNX (nothing downloads). Every loop runs the same rows (``rows`` units of one batch) with
plain projected gradient ascent:

- ``native``: the torch model, ``model(x)[i, unit_i]`` summed, ``autograd.grad``, step, clip;
- ``native_proxy``: ProxyGrad written natively: the gradient through a copy of the model whose
  ReLUs are LeakyReLU(0.3) (ReLU6: slope 0.3 below zero), and the value from a no-grad forward
  of the model itself, as ProxyGrad needs the true value of every step; its ratio to
  ``native`` is what the method itself costs, whoever implements it;
- ``standard`` / ``decoupled`` / ``proxy``: the engine, every row with that method;
- ``mixed``: the engine with ``best(0.3)``: half the rows standard, half decoupled, one chunk.

A step's time is taken from the second step on (the first one allocates), in two clocks:
CPU seconds of the process (``time.process_time``; with one torch thread the work itself, and
less disturbed by other processes on a shared machine than wall time) and wall seconds.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass

import torch

from benchmarks.harness import model_path, native_digits, peak_rss_mib
from onnx_am import import_onnx
from onnx_am.engine.maximizer import AMConfig, maximize

LR = 0.1
BETA = 0.3
LOOPS = ("native", "standard", "decoupled", "proxy", "mixed", "default", "native_proxy")
#: Loops that run the native network (no engine, no cross-check).
NATIVE_LOOPS = ("native", "native_proxy")
ENGINE_METHODS = {
    "standard": ["standard"],
    "decoupled": [f"decoupled({BETA:g})"],
    "proxy": [f"proxy({BETA:g})"],
    "mixed": [f"best({BETA:g})"],
    # analyze's default rows: standard + decoupled(anneal(beta)), whose slopes change each step
    "default": [f"best(anneal({BETA:g}))"],
}


@dataclass(frozen=True)
class Model:
    """A benchmark model: where it comes from, its input, and how many rows a step runs."""

    name: str
    source: str  # "digits" (models/NAME.onnx) or "torchvision" (built and exported)
    shape: tuple[int, ...]
    classes: int
    restarts: int

    @property
    def rows(self) -> int:
        """Rows per step: classes x restarts (the mixed loop: half as many classes, 2 methods)."""
        return self.classes * self.restarts


MODELS = {
    "digits_relu": Model("digits_relu", "digits", (1, 8, 8), 8, 8),
    "digits_deep_relu": Model("digits_deep_relu", "digits", (1, 8, 8), 8, 8),
    "resnet50": Model("resnet50", "torchvision", (3, 224, 224), 16, 1),
    "mobilenet_v2": Model("mobilenet_v2", "torchvision", (3, 224, 224), 16, 1),
}


def torchvision_model(name: str) -> torch.nn.Module:
    """torchvision ``name`` with seeded random weights, in eval mode, no gradients on weights."""
    import torchvision

    torch.manual_seed(0)  # torchvision's initializers use the global RNG; this is a benchmark
    model = getattr(torchvision.models, name)(weights=None).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def export_torchvision(name: str, path: str) -> None:
    """The seeded torchvision model as ONNX (opset 17, legacy exporter), dynamic batch."""
    torch.onnx.export(
        torchvision_model(name),
        (torch.zeros(1, *MODELS[name].shape),),
        path,
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )


def native_model(model: Model) -> torch.nn.Module:
    """The model written natively in torch, with the ONNX file's weights."""
    if model.source == "digits":
        return native_digits(model.name)
    return torchvision_model(model.name)


def onnx_file(model: Model, folder: str | None) -> str:
    """The ONNX file of ``model``: ``models/NAME.onnx``, or ``folder/NAME.onnx`` (exported)."""
    if model.source == "digits":
        return str(model_path(model.name))
    return f"{folder}/{model.name}.onnx"


class StepClock:
    """A progress callback that records when each step finished, in both clocks."""

    def __init__(self) -> None:
        self.stamps: list[tuple[float, float]] = []

    def __call__(self, done: int = 0, total: int = 0, info: object = None) -> None:
        self.stamps.append((time.process_time(), time.perf_counter()))

    def per_step(self) -> tuple[float, float]:
        """Mean ``(cpu, wall)`` seconds per step between the first and the last stamp."""
        if len(self.stamps) < 2:
            return float("nan"), float("nan")
        (cpu0, wall0), (cpu1, wall1) = self.stamps[0], self.stamps[-1]
        steps = len(self.stamps) - 1
        return (cpu1 - cpu0) / steps, (wall1 - wall0) / steps


def native_ascent(
    model: torch.nn.Module, x: torch.Tensor, units: torch.Tensor, steps: int
) -> StepClock:
    """Plain projected gradient ascent on ``model(x)[i, units[i]]``; the clock of its steps."""
    clock = StepClock()
    x = x.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        objective = model(x).gather(1, units[:, None]).sum()
        (grad,) = torch.autograd.grad(objective, x)
        with torch.no_grad():
            x = (x + LR * grad).clamp_(-1.0, 1.0)
        clock()
    return clock


class _LeakyReLU6(torch.nn.Module):
    """ReLU6's proxy: slope ``beta`` below zero, ReLU6 above."""

    def __init__(self, beta: float):
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x < 0, self.beta * x, x.clamp(max=6.0))


def proxy_network(model: torch.nn.Module, beta: float = BETA) -> torch.nn.Module:
    """A copy of ``model`` with every ``nn.ReLU`` / ``nn.ReLU6`` module replaced by its
    leaky proxy of slope ``beta`` (the models here use rectifier modules only)."""
    proxy = copy.deepcopy(model)
    for parent in list(proxy.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.ReLU6):
                setattr(parent, name, _LeakyReLU6(beta))
            elif isinstance(child, torch.nn.ReLU):
                setattr(parent, name, torch.nn.LeakyReLU(beta))
    return proxy


def native_proxy_ascent(
    model: torch.nn.Module,
    proxy: torch.nn.Module,
    x: torch.Tensor,
    units: torch.Tensor,
    steps: int,
) -> StepClock:
    """ProxyGrad natively: the proxy's gradient, the true value of every step."""
    clock = StepClock()
    x = x.clone()
    best = torch.full((len(x),), float("-inf"))
    for _ in range(steps):
        x.requires_grad_(True)
        objective = proxy(x).gather(1, units[:, None]).sum()
        (grad,) = torch.autograd.grad(objective, x)
        with torch.no_grad():
            best = torch.maximum(best, model(x).gather(1, units[:, None])[:, 0])
            x = (x + LR * grad).clamp_(-1.0, 1.0)
        clock()
    return clock


def engine_run(imported, targets, methods, steps, **config) -> tuple[object, StepClock]:
    """One engine call with a step clock attached."""
    clock = StepClock()
    settings = {"steps": steps, "lr": LR, "seed": 0, "restarts": 1, **config}
    report = maximize(imported, targets, methods, config=AMConfig.of(**settings), progress=clock)
    return report, clock


class Loops:
    """The loops of one model, ready to run: the native network, the import, the rows."""

    def __init__(self, model: Model, path: str, rows: int | None = None):
        self.model = model
        self.path = path
        self.rows = rows or model.rows
        self.imported = self.native = self.proxy = None  # built on first use
        restarts = min(model.restarts, self.rows)
        self.restarts = restarts
        self.classes = self.rows // restarts
        generator = torch.Generator().manual_seed(0)
        self.x = torch.empty(self.rows, *model.shape).uniform_(-0.1, 0.1, generator=generator)
        self.units = torch.arange(self.classes).repeat_interleave(restarts)

    def run(self, loop: str, steps: int, **config) -> StepClock:
        """Run ``loop`` for ``steps`` steps; its clock."""
        if loop == "native":
            if self.native is None:
                self.native = native_model(self.model)
            return native_ascent(self.native, self.x, self.units, steps)
        if loop == "native_proxy":
            if self.native is None:
                self.native = native_model(self.model)
            if self.proxy is None:
                self.proxy = proxy_network(self.native)
            return native_proxy_ascent(self.native, self.proxy, self.x, self.units, steps)
        if self.imported is None:
            self.imported = import_onnx(self.path)
        classes = self.classes // 2 if loop in ("mixed", "default") else self.classes
        output = self.imported.output_names[0]
        targets = [f"{output}:{i}" for i in range(classes)]
        settings = {"restarts": self.restarts, "batch_size": self.rows, "crosscheck": False}
        settings.update(config)
        return engine_run(self.imported, targets, ENGINE_METHODS[loop], steps, **settings)[1]


def time_loops(loops: Loops, steps: int, rounds: int, warmup: bool = True) -> dict:
    """Every loop, ``rounds`` times interleaved (the machine's load hits all alike).

    Per loop: the fastest round's CPU and wall seconds per step, and the ratio to the native
    loop as the median over rounds of that round's ratio (each against the native steps run
    just before it, so slow drifts of the load cancel). ``warmup`` runs each loop for two
    steps first (a loop's own first step is never timed either way).
    """
    for loop in LOOPS if warmup else ():  # first calls allocate and pick kernels
        loops.run(loop, 2)
    seen: dict[str, list[tuple[float, float]]] = {loop: [] for loop in LOOPS}
    for _ in range(rounds):
        for loop in LOOPS:
            seen[loop].append(loops.run(loop, steps).per_step())
    native = seen["native"]
    entry = {"model": loops.model.name, "rows": loops.rows, "steps": steps, "rounds": rounds}
    for loop, values in seen.items():
        pairs = list(zip(values, native, strict=True))
        entry[loop] = {
            "cpu_s": min(cpu for cpu, _ in values),
            "wall_s": min(wall for _, wall in values),
            "cpu_ratio": statistics.median(v[0] / n[0] for v, n in pairs),
            "wall_ratio": statistics.median(v[1] / n[1] for v, n in pairs),
            "rounds_cpu_s": [cpu for cpu, _ in values],
        }
    return entry


def peak_of_loop(loops: Loops, loop: str, steps: int, crosscheck: bool) -> dict:
    """Run one loop in this (fresh) process; its peak RSS and the steps' times."""
    config = {} if loop in NATIVE_LOOPS else {"crosscheck": crosscheck}
    cpu, wall = loops.run(loop, steps, **config).per_step()
    return {
        "model": loops.model.name,
        "loop": loop,
        "rows": loops.rows,
        "steps": steps,
        "crosscheck": crosscheck and loop not in NATIVE_LOOPS,
        "cpu_s": cpu,
        "wall_s": wall,
        "peak_rss_mib": peak_rss_mib(),
    }
