"""Ways to write a decoupled ReLU (forward ``relu``, backward slope ``beta`` below 0), timed.

Why :mod:`onnx_am.passes.spans` is a ``torch.autograd.Function`` that saves the output. Every
variant gives bit-identical values and the same gradient; they differ in Python calls per
step, elementwise passes and what they keep for the backward:

- ``native``: ``torch.relu`` (the true gradient), the reference of the ratios;
- ``autograd.Function (ours)``: forward ``relu``, saves the output, backward one
  ``leaky_relu_backward`` on it (a Python call in each direction);
- ``torch.library custom op``: the same with ``torch.library.custom_op`` +
  ``register_autograd``;
- ``overwrite output``: ``leaky_relu(x, beta)`` (its backward is the decoupled one, C++ only),
  then the true values written into its output through ``.data``: no Python in the backward,
  but an extra forward pass and it keeps the input as well;
- ``straight-through``: ``p + (relu(x) - p).detach()`` with ``p = leaky_relu(x, beta)``.

A layer here is ``y = variant(h * 1.0)`` and a depthwise 3x3 convolution of ``y`` (which,
like any next layer, keeps ``y`` for its backward), four of them, then ``autograd.grad`` of
the sum.
Small: the digits CNNs' activations (64 x 16 x 8 x 8); large: a ResNet-50 stage-1 activation
at batch 16 (16 x 64 x 56 x 56). CPU time (``time.process_time``), one torch thread,
interleaved rounds, median over rounds of the per-round ratio to ``native``.

    python -m benchmarks.rectifier_variants
"""

from __future__ import annotations

import statistics
import time

import torch
from torch.nn import functional

from benchmarks.harness import command, machine, machine_line, markdown_table, parser, write_results

BETA = 0.3
LAYERS = 4
SHAPES = {
    "small (digits)": ((64, 16, 8, 8), 200),
    "large (ResNet-50 stage 1)": ((16, 64, 56, 56), 3),
}


class _SaveOutput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = torch.relu(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return torch.ops.aten.leaky_relu_backward(grad, y, BETA, False)


@torch.library.custom_op("onnx_am_bench::decoupled_relu", mutates_args=())
def _custom_op(x: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.relu(x)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(output)
    ctx.beta = inputs[1]


def _custom_backward(ctx, grad):
    (y,) = ctx.saved_tensors
    return torch.ops.aten.leaky_relu_backward(grad, y, ctx.beta, False), None


_custom_op.register_autograd(_custom_backward, setup_context=_setup)


def _overwrite(x):
    y = functional.leaky_relu(x, BETA)
    y.data.clamp_min_(0)  # the true values, invisible to autograd (leaky_relu saved x)
    return y


def _straight_through(x):
    proxy = functional.leaky_relu(x, BETA)
    return proxy + (torch.relu(x) - proxy).detach()


VARIANTS = {
    "native": torch.relu,
    "autograd.Function (ours)": _SaveOutput.apply,
    "torch.library custom op": lambda x: _custom_op(x, BETA),
    "overwrite output": _overwrite,
    "straight-through": _straight_through,
}


def _step(variant, x0: torch.Tensor) -> torch.Tensor:
    x = x0.detach().requires_grad_(True)
    channels = x0.shape[1]
    weight = torch.randn(channels, 1, 3, 3, generator=torch.Generator().manual_seed(1)) / 3
    h = x
    for _ in range(LAYERS):
        y = variant(h * 1.0)
        h = functional.conv2d(y, weight, padding=1, groups=channels)  # keeps y, as layers do
    return torch.autograd.grad(h.sum(), x)[0]


def _saved_bytes(variant, x0: torch.Tensor) -> int:
    """Bytes the autograd graph of one step keeps (distinct storages)."""
    seen: dict[int, int] = {}

    def pack(tensor):
        seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _step(variant, x0)
    return sum(seen.values())


def measure(rounds: int) -> list[dict]:
    """Per shape and variant: CPU us per layer (fastest round), median ratio, saved MiB."""
    rows = []
    for label, (shape, repeats) in SHAPES.items():
        x0 = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        expected = _step(_SaveOutput.apply, x0)
        assert not torch.equal(expected, _step(torch.relu, x0))
        for name, variant in VARIANTS.items():
            if name != "native":  # every variant: the same decoupled gradient
                assert torch.equal(_step(variant, x0), expected), name
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(rounds):
            for name, variant in VARIANTS.items():
                started = time.process_time()
                for _ in range(repeats):
                    _step(variant, x0)
                times[name].append((time.process_time() - started) / repeats / LAYERS)
        for name, values in times.items():
            ratios = [v / n for v, n in zip(values, times["native"], strict=True)]
            rows.append(
                {
                    "shape": label,
                    "variant": name,
                    "us_per_layer": 1e6 * min(values),
                    "ratio": statistics.median(ratios),
                    "saved_mib": _saved_bytes(VARIANTS[name], x0) / 2**20,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    options = parser(__doc__)
    options.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    args = options.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    rows = measure(args.rounds)
    run_as = command("rectifier_variants", f"--rounds {args.rounds}" if args.rounds != 7 else "")
    text = "\n".join(
        [
            "# Decoupled ReLU variants",
            "",
            machine_line(info),
            "",
            f"Command: `{run_as}`",
            "",
            "\n\n".join((__doc__ or "").split("\n\n")[1:4]).strip(),
            "",
            markdown_table(
                ["activations", "variant", "CPU us / layer", "vs native", "saved MiB / step"],
                [
                    [
                        r["shape"],
                        r["variant"],
                        f"{r['us_per_layer']:.0f}",
                        f"{r['ratio']:.2f}x",
                        f"{r['saved_mib']:.1f}",
                    ]
                    for r in rows
                ],
            ),
            "",
        ]
    )
    write_results(args.out, "rectifier_variants", text, {"machine": info, "rows": rows})
    print(text)


if __name__ == "__main__":
    main()
