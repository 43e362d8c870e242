"""Speed of the AM engine against a plain torch gradient-ascent loop on the same network.

    python -m benchmarks.engine_speed [--threads 1] [--steps 100] [--device cpu] [--repeat 3]
        [--only-steps]

Prints the machine, then the tables below, and writes them to
``benchmarks/results/engine_speed.md``:

1. seconds per step, 64 rows in one batch: the engine (standard / decoupled / proxy) on the
   ONNX import of ``models/digits_relu.onnx`` versus a hand-written loop of the same method on
   the native torch ``SimpleCNN`` with the same weights (and the standard loop on the converted
   graph, to separate the converter's cost from the engine's). Native standard: ``nn.ReLU``;
   native decoupled: a custom autograd ReLU written plainly; native proxy: ``nn.LeakyReLU(beta)``
   forward and backward plus one no-grad forward of the true network per step (the value the
   engine reports for proxy rows). ``best`` runs 128 rows (standard and decoupled rows mixed
   in two chunks), compared with the two native loops together. ``vs native``: against the
   native loop of the same method; ``vs nn.ReLU``: against the plain native loop (per 64
   rows). The loops run interleaved, one of each per repetition, so the machine's load hits
   all of them alike; the ratios are within one run.
2. 64 units (``/classifier/relu_fc1/Relu_output_0:0-63``) batched vs one at a time, units/s.
3. the share of the onnxruntime cross-check in a full run.

Not a test; medians over ``--repeat`` runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from benchmarks import harness
from onnx_am import import_onnx
from onnx_am.engine.maximizer import AMConfig, maximize

MODEL = harness.model_path("digits_relu")
UNITS_64 = "/classifier/relu_fc1/Relu_output_0:0-63"


def native_cnn(act=torch.nn.ReLU) -> torch.nn.Module:
    """The digits SimpleCNN from ``models/make_digits_cnns.py`` with the ONNX file's weights.

    ``act()`` builds each rectifier (``nn.ReLU`` by default).
    """
    net = harness.load_maker().SimpleCNN(lambda _c: act())
    net.load_state_dict(harness.onnx_weights(MODEL))
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


def native_loop(
    net, units: torch.Tensor, steps: int, lr: float, device: str, true_net=None
) -> float:
    """Plain projected gradient ascent on logits; returns seconds per step.

    With ``true_net`` (proxy), each step also measures the true value by a no-grad forward.
    """
    generator = torch.Generator().manual_seed(0)
    x = ((torch.rand((len(units), 1, 8, 8), generator=generator) * 2 - 1) * 0.1).to(device)
    rows = torch.arange(len(units), device=device)
    _sync(device)
    tic = time.perf_counter()
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        objective = net(x)[rows, units].sum()
        (grad,) = torch.autograd.grad(objective, x)
        if true_net is not None:
            with torch.no_grad():
                true_net(x)[rows, units]
        x = (x + lr * grad).clamp(-1, 1)
    _sync(device)
    return (time.perf_counter() - tic) / steps


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def engine_step_time(imported, targets, method: str, config: AMConfig) -> float:
    report = maximize(imported, targets, [method], config)
    return report.timings["optimize"] / config.ascent.steps


def median(fn, repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def interleaved_medians(loops: dict, repeat: int) -> dict[str, float]:
    """Median seconds of each loop, running one of each per repetition (in turn)."""
    times: dict[str, list[float]] = {label: [] for label in loops}
    for _ in range(repeat):
        for label, loop in loops.items():
            times[label].append(loop())
    return {label: statistics.median(values) for label, values in times.items()}


def step_table(
    imported, targets, units, config: AMConfig, repeat: int, say: Callable, beta: float = 0.3
):
    """Table 1: each engine method against the native loop of the same method."""
    device, steps = config.device, config.ascent.steps
    net = native_cnn().to(device)
    decoupled = decoupled_cnn(beta).to(device)
    proxy = native_cnn(lambda: torch.nn.LeakyReLU(beta)).to(device)
    graph = imported.extractor(["logits"])

    def logits(x):
        return graph(x)[0]

    def native(model, true_net=None):
        return lambda: native_loop(model, units, steps, config.ascent.lr, device, true_net)

    def engine(method):
        return lambda: engine_step_time(imported, targets, method, config)

    std = "native torch, nn.ReLU"
    dec = f"native torch, decoupled ReLU({beta:g})"
    prx = f"native torch, proxy LeakyReLU({beta:g})"
    # label -> (loop, the labels whose sum it is compared with)
    loops = {
        std: (native(net), (std,)),
        "same loop on the onnx2torch graph": (native(logits), (std,)),
        dec: (native(decoupled), (dec,)),
        prx: (native(proxy, true_net=net), (prx,)),
        "engine, standard": (engine("standard"), (std,)),
        f"engine, decoupled({beta:g})": (engine(f"decoupled({beta:g})"), (dec,)),
        f"engine, proxy({beta:g})": (engine(f"proxy({beta:g})"), (prx,)),
        f"engine, best({beta:g}), 128 rows": (engine(f"best({beta:g})"), (std, dec)),
    }
    seconds = interleaved_medians({label: loop for label, (loop, _) in loops.items()}, repeat)
    say(f"{'loop':38s} {'ms/step':>9s} {'vs native':>10s} {'vs nn.ReLU':>11s}")
    for label, (_, references) in loops.items():
        ratio = seconds[label] / sum(seconds[r] for r in references)
        relu = seconds[label] / (len(references) * seconds[std])
        say(f"{label:38s} {seconds[label] * 1e3:9.3f} {ratio:9.2f}x {relu:10.2f}x")


def machine(device: str) -> str:
    """The harness's machine line plus the device the loops ran on."""
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "-"
    return f"{harness.machine_line()}, device {device} ({gpu})"


def main(argv: list[str] | None = None) -> None:
    options = harness.parser(__doc__)
    options.add_argument("--steps", type=int, default=100)
    options.add_argument("--repeat", type=int, default=3)
    options.add_argument("--device", default="cpu")
    options.add_argument("--only-steps", action="store_true", help="table 1 only")
    args = options.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text)
        lines.append(text)

    measure(args, say)
    run_as = harness.command(
        "engine_speed",
        f"--threads {args.threads} --steps {args.steps} --repeat {args.repeat}",
        f"--device {args.device}",
        "--only-steps" if args.only_steps else "",
    )
    text = "\n".join(["# Engine speed", "", f"Command: `{run_as}`", "", "```", *lines, "```"])
    harness.write_results(args.out, "engine_speed", text)


def measure(args, say: Callable) -> None:
    """The three tables, each line passed to ``say``."""
    device, steps, repeat = args.device, args.steps, args.repeat
    say(machine(device))
    imported = import_onnx(MODEL)
    # 64 rows: logits 0-7, 8 restarts each, in one chunk; the native loop does the same rows.
    targets = [f"logits:{i}" for i in range(8)]
    config = AMConfig.of(
        steps=steps, lr=0.05, restarts=8, batch_size=64, crosscheck=False, device=device
    )
    units = torch.arange(8, device=device).repeat_interleave(8)
    say(f"\n1. seconds per step, 64 rows in one batch ({steps} steps, median of {repeat})")
    step_table(imported, targets, units, config, repeat, say)

    if args.only_steps:
        return
    say(f"\n2. 64 units of {UNITS_64.split(':')[0]}, decoupled(0.3), {steps} steps")
    say(f"{'mode':38s} {'seconds':>9s} {'units/s':>10s}")
    for label, batch in (("batched (64 rows per step)", 64), ("one at a time (batch_size=1)", 1)):
        one = AMConfig.of(
            steps=steps, restarts=1, batch_size=batch, crosscheck=False, device=device
        )
        report = maximize(imported, [UNITS_64], ["decoupled(0.3)"], one)
        seconds = report.timings["optimize"]
        say(f"{label:38s} {seconds:9.2f} {64 / seconds:10.1f}")

    say("\n3. share of the onnxruntime cross-check, 64 units x (standard, decoupled(0.3))")
    full = AMConfig.of(steps=steps, restarts=1, batch_size=64, crosscheck=True, device=device)
    timings = maximize(imported, [UNITS_64], ["standard", "decoupled(0.3)"], full).timings
    for phase in ("baselines", "starts", "optimize", "crosscheck", "total"):
        say(f"{phase:38s} {timings[phase]:9.3f} s {100 * timings[phase] / timings['total']:8.1f} %")


if __name__ == "__main__":
    main()
