"""Build toy ONNX functions with KNOWN global maxima on the box [-1, 1]^d.

These are the kind of functions on which Linse, Barth & Martinetz (IJCNN 2024,
arXiv 2410.16958) show activation maximization failing: the start point sits in a
region where every hidden ReLU is inactive (zero gradient), or a small "bait" unit
leads gradient ascent to a poor corner while the big units stay dead on the way.

Every function is a one-hidden-layer network (hand-built with ``onnx.helper``)::

    output[:, k] = sum_j V[j, k] * act(x @ W[:, j] + b[j]) + c[k],   V >= 0,

with ``act`` = ``Relu`` or ``LeakyRelu(alpha)`` (alpha <= 1).  Each ``act`` is convex and
``V >= 0``, so every output is convex in x and its maximum over the box is attained at
a corner; enumerating all 2^d corners (d <= 12) in float64 gives the exact maximum and
its maximizing corner(s).  Each output owns a disjoint set of hidden units.

Families (``models/<name>.onnx``):

* ``toy_relu_dead_d2``     d=2, 1 output, 4 units: all dead for ``max|x_i| < dead_radius``
                           (small enough to plot the landscape).
* ``toy_relu_dead_d8``     d=8, 4 outputs x 6 units, each output dead around 0.
* ``toy_leaky001_dead_d8`` same weights, ``LeakyRelu(0.01)`` (tiny, misleading gradient).
* ``toy_relu_trap_d10``    d=10, 1 output: one live "bait" unit at 0 pulls ascent to a
                           mediocre corner; the "prize" units are dead at 0 and along the
                           whole straight path to the bait corner, and give the true max.
* ``toy_leaky001_trap_d10`` same weights with ``LeakyRelu(0.01)``.
* ``toy_relu_dead_d12``    d=12, 2 outputs x 8 units (4096 corners).

Graph: input ``input`` ``[batch, d]`` -> ``MatMul``/``Add`` (tensor ``hidden_pre``) ->
act (tensor ``hidden``) -> ``MatMul``/``Add`` -> output ``output`` ``[batch, k]``;
opset 17, IR 8.  ``models/toy_functions.json`` gives, per function, ``target`` /
``max`` for output 0 (``"tensor:unit"`` form) and, under ``outputs``, per output: exact maximum,
argmax corner(s), value and gradient at 0, value at the all -1 / all +1 corners, the
radius of the all-dead cube around 0, the onnxruntime value at the argmax, and the
value a plain NumPy projected gradient ascent from 0 reaches with the standard backward
and with a decoupled backward slope of 0.3 (reference numbers, not a test oracle).

Re-make (instant, no training)::

    python models/make_toy_functions.py
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
JSON_PATH = HERE / "toy_functions.json"
OPSET = 17
IR_VERSION = 8


@dataclass(frozen=True)
class ToyNet:
    """Weights in float32 exactly as stored in the ONNX file."""

    W: np.ndarray  # [d, H]
    b: np.ndarray  # [H]
    V: np.ndarray  # [H, k], >= 0
    c: np.ndarray  # [k]
    alpha: float  # 0.0 -> Relu, else LeakyRelu(alpha)


def dead_units(rng: np.random.Generator, d: int, n: int, margin: tuple[float, float]):
    """``n`` units with ``b_j = -a_j * ||w_j||_1``: inactive wherever max|x_i| < a_j."""
    W = rng.normal(0.0, 1.0, (d, n))
    a = rng.uniform(*margin, n)
    b = -a * np.abs(W).sum(0)
    return W, b


def dead_net(seed: int, d: int, k: int, per_output: int, alpha: float = 0.0) -> ToyNet:
    rng = np.random.default_rng(seed)
    W, b = dead_units(rng, d, k * per_output, (0.5, 0.8))
    V = np.zeros((k * per_output, k))
    for out in range(k):
        V[out * per_output : (out + 1) * per_output, out] = rng.uniform(0.5, 2.0, per_output)
    return _as_f32(W, b, V, np.zeros(k), alpha)


def trap_net(seed: int, d: int, n_prize: int, alpha: float = 0.0) -> ToyNet:
    """Bait unit live at 0 (max ~ d/2); prize units dead at 0 and along 0 -> bait corner.

    Bait: ``w_0 = 0.5 * s`` for a random sign vector s, ``b_0 = 0.1``; gradient ascent
    from near 0 walks the ray ``t * s``.  Each prize unit has ``w_j . s < 0`` (its signs
    mostly oppose s) and ``b_j < 0``, so it stays inactive on that ray.
    """
    rng = np.random.default_rng(seed)
    s = rng.choice([-1.0, 1.0], d)
    W_p, b_p = dead_units(rng, d, n_prize, (0.45, 0.6))
    for j in range(n_prize):
        if W_p[:, j] @ s >= 0:  # make the prize point away from the bait corner
            W_p[:, j] -= (W_p[:, j] @ s + 0.5) / d * s
        b_p[j] = -0.5 * np.abs(W_p[:, j]).sum()
    W = np.concatenate([0.5 * s[:, None], W_p], axis=1)
    b = np.concatenate([[0.1], b_p])
    V = np.concatenate([[1.0], rng.uniform(2.0, 3.0, n_prize)])[:, None]
    return _as_f32(W, b, V, np.zeros(1), alpha)


def _as_f32(W, b, V, c, alpha) -> ToyNet:
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    return ToyNet(f32(W), f32(b), f32(V), f32(c), float(alpha))


def forward64(net: ToyNet, x: np.ndarray) -> np.ndarray:
    """Exact float64 evaluation of the stored float32 weights; x is [N, d]."""
    z = x @ net.W.astype(np.float64) + net.b.astype(np.float64)
    h = np.where(z > 0, z, net.alpha * z)
    return h @ net.V.astype(np.float64) + net.c.astype(np.float64)


def grad_at64(net: ToyNet, x: np.ndarray, out: int) -> np.ndarray:
    """Standard-backward gradient of output ``out`` at one point x [d] (ReLU'(0) = 0)."""
    z = x @ net.W.astype(np.float64) + net.b.astype(np.float64)
    slope = np.where(z > 0, 1.0, net.alpha)
    return net.W.astype(np.float64) @ (slope * net.V[:, out].astype(np.float64))


def ascend(net: ToyNet, out: int, backward_slope: float, steps: int = 400) -> float:
    """Projected gradient ascent from x = 0 (step 0.05, clipped to the box).

    ``backward_slope`` is the rectifier slope used for z <= 0 in the backward pass only:
    ``net.alpha`` gives standard AM, a larger value the decoupled backward.  Returns the
    true (forward) value reached; a reference point for the library's engine.
    """
    x = np.zeros(net.W.shape[0])
    W, b, v = (a.astype(np.float64) for a in (net.W, net.b, net.V[:, out]))
    for _ in range(steps):
        slope = np.where(x @ W + b > 0, 1.0, backward_slope)
        x = np.clip(x + 0.05 * (W @ (slope * v)), -1.0, 1.0)
    return float(forward64(net, x[None])[0, out])


def to_onnx(net: ToyNet, name: str) -> onnx.ModelProto:
    d, k = net.W.shape[0], net.V.shape[1]
    init = [
        numpy_helper.from_array(net.W, "hidden.weight"),
        numpy_helper.from_array(net.b, "hidden.bias"),
        numpy_helper.from_array(net.V, "out.weight"),
        numpy_helper.from_array(net.c, "out.bias"),
    ]
    if net.alpha == 0.0:
        act = helper.make_node("Relu", ["hidden_pre"], ["hidden"], name="hidden/Relu")
    else:
        act = helper.make_node(
            "LeakyRelu", ["hidden_pre"], ["hidden"], name="hidden/LeakyRelu", alpha=net.alpha
        )
    nodes = [
        helper.make_node("MatMul", ["input", "hidden.weight"], ["hidden_mm"], name="hidden/MatMul"),
        helper.make_node("Add", ["hidden_mm", "hidden.bias"], ["hidden_pre"], name="hidden/Add"),
        act,
        helper.make_node("MatMul", ["hidden", "out.weight"], ["out_mm"], name="out/MatMul"),
        helper.make_node("Add", ["out_mm", "out.bias"], ["output"], name="out/Add"),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", d])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", k])],
        init,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="onnx-am models/make_toy_functions.py",
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def analyse(net: ToyNet, path: Path) -> list[dict]:
    """Exact maxima by corner enumeration, cross-checked with onnxruntime."""
    d, k = net.W.shape[0], net.V.shape[1]
    corners = np.array(list(itertools.product([-1.0, 1.0], repeat=d)))
    values = forward64(net, corners)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    zero = np.zeros((1, d))
    results = []
    for out in range(k):
        units = np.flatnonzero(net.V[:, out] > 0)
        best = values[:, out].max()
        ties = np.flatnonzero(values[:, out] >= best - 1e-9 * max(1.0, abs(best)))
        argmax = corners[ties[0]]
        ort_val = sess.run(None, {"input": argmax[None].astype(np.float32)})[0][0, out]
        norms = np.abs(net.W[:, units]).sum(0).astype(np.float64)
        radius = float(max(0.0, np.min(-net.b[units] / norms)))
        results.append(
            {
                "output_index": out,
                "max": float(best),
                "argmax": argmax.tolist(),
                "n_argmax_corners": int(len(ties)),
                "second_best_corner_value": float(np.sort(values[:, out])[-1 - len(ties)]),
                "onnxruntime_value_at_argmax": float(ort_val),
                "value_at_zero": float(forward64(net, zero)[0, out]),
                "grad_at_zero": grad_at64(net, zero[0], out).tolist(),
                "value_at_all_minus_one": float(forward64(net, -np.ones((1, d)))[0, out]),
                "value_at_all_plus_one": float(forward64(net, np.ones((1, d)))[0, out]),
                "dead_radius_inf_norm": round(radius, 6),
                "standard_ascent_from_zero": ascend(net, out, net.alpha),
                "decoupled_ascent_from_zero_slope0.3": ascend(net, out, 0.3),
                "hidden_units": units.tolist(),
            }
        )
    return results


def make_all() -> dict[str, ToyNet]:
    dead8 = dead_net(seed=8, d=8, k=4, per_output=6)
    trap10 = trap_net(seed=10, d=10, n_prize=3)
    return {
        "toy_relu_dead_d2": dead_net(seed=2, d=2, k=1, per_output=4),
        "toy_relu_dead_d8": dead8,
        "toy_leaky001_dead_d8": ToyNet(dead8.W, dead8.b, dead8.V, dead8.c, 0.01),
        "toy_relu_trap_d10": trap10,
        "toy_leaky001_trap_d10": ToyNet(trap10.W, trap10.b, trap10.V, trap10.c, 0.01),
        "toy_relu_dead_d12": dead_net(seed=12, d=12, k=2, per_output=8),
    }


def main() -> None:
    report = {
        "box": [-1.0, 1.0],
        "formula": "output[:, k] = sum_j V[j,k] * act(x @ W[:, j] + b[j]) + c[k], V >= 0",
        "why_exact": "each output is convex (V >= 0, act convex), so its max over the box "
        "is at a corner; all 2^d corners are enumerated in float64",
        "functions": {},
    }
    for name, net in make_all().items():
        path = HERE / f"{name}.onnx"
        onnx.save(to_onnx(net, name), str(path))
        outputs = analyse(net, path)
        report["functions"][name] = {
            "file": path.name,
            "d": int(net.W.shape[0]),
            "n_hidden": int(net.W.shape[1]),
            "n_outputs": int(net.V.shape[1]),
            "activation": "Relu" if net.alpha == 0.0 else "LeakyRelu",
            "alpha": net.alpha,
            "input": {"name": "input", "shape": ["batch", int(net.W.shape[0])]},
            "output": {"name": "output", "shape": ["batch", int(net.V.shape[1])]},
            "hidden_tensors": {"pre_activation": "hidden_pre", "post_activation": "hidden"},
            "file_bytes": path.stat().st_size,
            "target": "output:0",
            "max": outputs[0]["max"],
            "outputs": outputs,
        }
        for o in outputs:
            print(
                f"{name:22s} out {o['output_index']}: max {o['max']:8.4f} "
                f"(ort {o['onnxruntime_value_at_argmax']:8.4f}, "
                f"2nd {o['second_best_corner_value']:8.4f}) "
                f"f(0) {o['value_at_zero']:7.4f} |grad(0)| {np.abs(o['grad_at_zero']).sum():.4f} "
                f"dead r {o['dead_radius_inf_norm']:.3f} ties {o['n_argmax_corners']} "
                f"GA {o['standard_ascent_from_zero']:.3f} "
                f"dec {o['decoupled_ascent_from_zero_slope0.3']:.3f}"
            )
    JSON_PATH.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
