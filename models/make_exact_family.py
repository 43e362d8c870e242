"""A family of small ReLU / LeakyReLU networks whose exact maximum over the input box is known.

Activation maximization is judged here against the truth, not against the best that some
method happened to find. Every network maps ``x`` in ``[-1, 1]^d`` (``d <= 16``) through 1-4
hidden layers ``h_l = act(W_l h_{l-1} + b_l)`` to one output ``v . h_L + c``, with ``act`` =
``Relu`` or ``LeakyRelu(alpha)``. Its exact maximum is computed independently of onnx-am by a
mixed-integer program (``scipy.optimize.milp``, HiGHS) with the usual big-M encoding of each
rectifier whose sign is not fixed on the box (pre-activation bounds by interval arithmetic):

    a >= z,  a >= alpha z,  a <= z - (1 - alpha) L (1 - s),  a <= alpha z + (1 - alpha) U s

with ``s`` binary, ``L <= z <= U``. Units whose sign is fixed on the box are linear. The
argmax the solver returns is evaluated in float64 on the stored float32 weights and by
onnxruntime; the solver's dual bound must agree with that value (relative gap <= 1e-7), and
no corner or random point may exceed it. For one-layer networks with non-negative output
weights (convex outputs) the maximum is also checked against all corners (vertex
enumeration) where ``d <= 12``.

Kinds (several seeds and sizes each, 32 networks):

* ``dead``: one layer, every unit inactive in a cube around 0 (where AM starts), convex.
* ``narrow``: one layer, every unit active only near one corner (a narrow active region).
* ``peak``: an interior peak (``A - k |x - p|_1``) plus dead units that make a corner bait.
* ``deep``: 2-4 random layers with negative biases: many units dead around the start.
* ``dead2``: two layers, the second dead around every start while the first is live.

Files: ``models/exact_family/<name>.onnx`` (input ``input`` ``[batch, d]``, output ``output``
``[batch, 1]``, the last hidden layer's post-activation tensor ``hidden<L>``), and
``models/exact_family.json`` with each network's kind, d, layers, activation, exact maximum,
argmax, solver bound and gap, and the onnxruntime value at the argmax.

Re-make (about a minute, no training, deterministic)::

    python models/make_exact_family.py
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
from scipy.optimize import Bounds, LinearConstraint, milp

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "exact_family"
JSON_PATH = HERE / "exact_family.json"
OPSET = 17
IR_VERSION = 8
#: Largest relative gap between the solver's bound and the value at its argmax.
MAX_GAP = 1e-7


@dataclass(frozen=True)
class Net:
    """Weights in float32, exactly as stored in the ONNX file."""

    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # (W [n_in, n_out], b [n_out])
    v: np.ndarray  # [n_last]
    c: float
    alpha: float

    @property
    def d(self) -> int:
        return self.layers[0][0].shape[0]


def forward64(net: Net, x: np.ndarray) -> np.ndarray:
    """Float64 evaluation of the stored float32 weights; ``x`` is ``[N, d]``, returns ``[N]``."""
    h = np.asarray(x, dtype=np.float64)
    for W, b in net.layers:
        z = h @ W.astype(np.float64) + b.astype(np.float64)
        h = np.where(z > 0, z, net.alpha * z)
    return h @ net.v.astype(np.float64) + float(net.c)


def exact_maximum(net: Net) -> dict:
    """The maximum over the box by MILP; its argmax, value and the solver's bound."""
    d = net.d
    # variable layout: x (d), then per layer: z (n), a (n), s (n)
    bounds_lo, bounds_hi, integrality = [-1.0] * d, [1.0] * d, [0] * d
    rows, lo, hi = [], [], []
    lower, upper = -np.ones(d), np.ones(d)
    prev = list(range(d))
    alpha = net.alpha

    def new(count, low, high, integer=0):
        start = len(bounds_lo)
        bounds_lo.extend(low)
        bounds_hi.extend(high)
        integrality.extend([integer] * count)
        return list(range(start, start + count))

    for W, b in net.layers:
        W64, b64 = W.astype(np.float64), b.astype(np.float64)
        z_lo = b64 + np.minimum(W64 * lower[:, None], W64 * upper[:, None]).sum(0)
        z_hi = b64 + np.maximum(W64 * lower[:, None], W64 * upper[:, None]).sum(0)
        n = W.shape[1]
        z = new(n, z_lo, z_hi)
        a_lo = np.where(z_lo > 0, z_lo, alpha * z_lo)
        a_hi = np.where(z_hi > 0, z_hi, alpha * z_hi)
        a = new(n, a_lo, a_hi)
        s = new(n, [0.0] * n, [1.0] * n, integer=1)
        for j in range(n):
            row = {z[j]: 1.0}
            for i, p in enumerate(prev):
                row[p] = row.get(p, 0.0) - W64[i, j]
            rows.append(row), lo.append(b64[j]), hi.append(b64[j])  # z = W^T h + b
            L, U = z_lo[j], z_hi[j]
            if U <= 0:  # always on the negative side
                rows.append({a[j]: 1.0, z[j]: -alpha}), lo.append(0.0), hi.append(0.0)
            elif L >= 0:  # always on the positive side
                rows.append({a[j]: 1.0, z[j]: -1.0}), lo.append(0.0), hi.append(0.0)
            else:
                rows.append({a[j]: 1.0, z[j]: -1.0}), lo.append(0.0), hi.append(np.inf)
                rows.append({a[j]: 1.0, z[j]: -alpha}), lo.append(0.0), hi.append(np.inf)
                # a <= z - (1 - alpha) L (1 - s)
                rows.append({a[j]: 1.0, z[j]: -1.0, s[j]: -(1 - alpha) * L})
                lo.append(-np.inf), hi.append(-(1 - alpha) * L)
                # a <= alpha z + (1 - alpha) U s
                rows.append({a[j]: 1.0, z[j]: -alpha, s[j]: -(1 - alpha) * U})
                lo.append(-np.inf), hi.append(0.0)
        lower, upper, prev = a_lo, a_hi, a
    count = len(bounds_lo)
    matrix = np.zeros((len(rows), count))
    for r, row in enumerate(rows):
        for col, value in row.items():
            matrix[r, col] += value
    objective = np.zeros(count)
    objective[prev] = -net.v.astype(np.float64)  # milp minimizes
    result = milp(
        objective,
        constraints=LinearConstraint(matrix, lo, hi),
        integrality=np.array(integrality),
        bounds=Bounds(bounds_lo, bounds_hi),
        options={"mip_rel_gap": 1e-12, "time_limit": 120},
    )
    if not result.success:
        raise RuntimeError(f"MILP failed: {result.message}")
    x = np.clip(result.x[:d], -1.0, 1.0)
    value = float(forward64(net, x[None])[0])
    bound = -float(result.mip_dual_bound) + float(net.c)
    gap = abs(bound - value) / max(1.0, abs(value))
    if gap > MAX_GAP:
        raise RuntimeError(f"MILP bound {bound} and value {value} differ by {gap:.2e}")
    return {"max": value, "argmax": x.tolist(), "bound": bound, "gap": gap}


def check_no_point_exceeds(net: Net, maximum: float, seed: int) -> None:
    """Random points (and every corner when d <= 12) stay at or below the maximum."""
    rng = np.random.default_rng(seed)
    points = [rng.uniform(-1, 1, (20000, net.d)), rng.choice([-1.0, 1.0], (20000, net.d))]
    if net.d <= 12:
        points.append(np.array(list(itertools.product([-1.0, 1.0], repeat=net.d))))
    best = max(float(forward64(net, p).max()) for p in points)
    if best > maximum + 1e-9 * max(1.0, abs(maximum)):
        raise RuntimeError(f"a sampled point reaches {best} > exact maximum {maximum}")


def _f32(*arrays):
    return tuple(np.asarray(a, dtype=np.float32) for a in arrays)


def dead_layer(rng, n_in: int, n: int, margin=(0.4, 0.8)):
    """Units inactive wherever ``max|x_i| < a_j`` (``b_j = -a_j ||w_j||_1``)."""
    W = rng.normal(0.0, 1.0, (n_in, n))
    b = -rng.uniform(*margin, n) * np.abs(W).sum(0)
    return W, b


def make_dead(seed: int, d: int, n: int, alpha: float) -> Net:
    rng = np.random.default_rng(seed)
    W, b = dead_layer(rng, d, n)
    return Net((_f32(W, b),), _f32(rng.uniform(0.5, 2.0, n))[0], 0.0, alpha)


def make_narrow(seed: int, d: int, n: int, alpha: float) -> Net:
    """Unit j is active only within a small L1 ball around a random corner."""
    rng = np.random.default_rng(seed)
    corners = rng.choice([-1.0, 1.0], (n, d))
    width = rng.uniform(0.3, 0.8, n)
    W = corners.T  # w_j . x = d at its corner, d - 2 |x - corner|_1 / 2 ... nearby
    b = -(d - width)
    return Net((_f32(W, b),), _f32(rng.uniform(0.5, 3.0, n))[0], 0.0, alpha)


def make_peak(seed: int, d: int, n_bait: int, alpha: float) -> Net:
    """``A - k |x - p|_1`` (an interior peak at p) plus dead bait units with positive weight."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(-0.6, 0.6, d)
    eye = np.eye(d)
    W_peak = np.concatenate([eye, -eye], axis=1)  # relu(x_i - p_i), relu(p_i - x_i)
    b_peak = np.concatenate([-p, p])
    W_bait, b_bait = dead_layer(rng, d, n_bait, (0.5, 0.7))
    W = np.concatenate([W_peak, W_bait], axis=1)
    b = np.concatenate([b_peak, b_bait])
    k = rng.uniform(1.0, 2.0)
    v = np.concatenate([-k * np.ones(2 * d), rng.uniform(0.2, 1.0, n_bait)])
    return Net((_f32(W, b),), _f32(v)[0], float(np.float32(2.0 * d * 0.3)), alpha)


def make_deep(seed: int, d: int, widths: tuple[int, ...], alpha: float) -> Net:
    """Random layers with negative biases (many units dead near 0), mixed-sign output; the
    first draw (from ``seed`` on) whose sampled maximum is clearly above its value at 0."""
    while True:
        net = _deep_draw(seed, d, widths, alpha)
        probe = np.random.default_rng(seed).uniform(-1, 1, (4096, d))
        if forward64(net, probe).max() > forward64(net, np.zeros((1, d)))[0] + 0.5:
            return net
        seed += 1000


def _deep_draw(seed: int, d: int, widths: tuple[int, ...], alpha: float) -> Net:
    rng = np.random.default_rng(seed)
    layers, n_in = [], d
    for width in widths:
        W = rng.normal(0.0, 1.0 / np.sqrt(n_in), (n_in, width))
        b = -rng.uniform(0.1, 0.6, width)
        layers.append(_f32(W, b))
        n_in = width
    v = rng.normal(0.5, 1.0, n_in)
    return Net(tuple(layers), _f32(v)[0], 0.0, alpha)


def make_dead2(seed: int, d: int, width: int, alpha: float) -> Net:
    """Layer 1 live (|x|-like pairs), layer 2 dead around every start near 0."""
    rng = np.random.default_rng(seed)
    W1 = rng.normal(0.0, 1.0, (d, width))
    b1 = np.zeros(width)
    W2 = np.abs(rng.normal(0.0, 1.0, (width, width))) * rng.choice([1.0, -0.3], (width, width))
    # layer-1 outputs are <= |W1|_1 * r near 0: put layer 2's threshold above what r = 0.3 gives
    reach = np.abs(W1).sum(0)
    b2 = -0.35 * (np.clip(W2, 0, None).T @ reach)
    v = rng.uniform(0.5, 2.0, width)
    return Net((_f32(W1, b1), _f32(W2, b2)), _f32(v)[0], 0.0, alpha)


def family() -> list[tuple[str, str, Net]]:
    """Every network of the family: ``(name, kind, net)``; deterministic."""
    nets = []
    for i, (d, alpha) in enumerate(itertools.product((4, 8, 12, 16), (0.0, 0.01))):
        nets.append((f"dead_d{d}_{_act(alpha)}", "dead", make_dead(100 + i, d, 2 * d, alpha)))
    for i, (d, alpha) in enumerate(itertools.product((6, 10), (0.0, 0.01))):
        nets.append((f"narrow_d{d}_{_act(alpha)}", "narrow", make_narrow(200 + i, d, 6, alpha)))
    for i, (d, alpha) in enumerate(itertools.product((3, 6, 10), (0.0, 0.01))):
        nets.append((f"peak_d{d}_{_act(alpha)}", "peak", make_peak(300 + i, d, 4, alpha)))
    deep = [(4, (8, 8)), (8, (12, 8)), (12, (16, 8)), (16, (12, 12)), (6, (8, 8, 8)),
            (10, (12, 8, 6)), (8, (8, 8, 8, 8)), (16, (10, 10, 8, 6))]  # fmt: skip
    for i, (d, widths) in enumerate(deep):
        alpha = 0.0 if i % 2 == 0 else 0.01
        name = f"deep{len(widths)}_d{d}_{_act(alpha)}"
        nets.append((name, "deep", make_deep(400 + i, d, widths, alpha)))
    for i, (d, alpha) in enumerate(itertools.product((4, 8, 12), (0.0, 0.01))):
        nets.append((f"dead2_d{d}_{_act(alpha)}", "dead2", make_dead2(500 + i, d, 8, alpha)))
    return nets


def _act(alpha: float) -> str:
    return "relu" if alpha == 0 else "leaky001"


def to_onnx(net: Net, name: str) -> onnx.ModelProto:
    inits, nodes, prev = [], [], "input"
    for index, (W, b) in enumerate(net.layers, 1):
        tag = f"hidden{index}"
        inits += [
            numpy_helper.from_array(W, f"{tag}.weight"),
            numpy_helper.from_array(b, f"{tag}.bias"),
        ]
        nodes += [
            helper.make_node(
                "MatMul", [prev, f"{tag}.weight"], [f"{tag}_mm"], name=f"{tag}/MatMul"
            ),
            helper.make_node(
                "Add", [f"{tag}_mm", f"{tag}.bias"], [f"{tag}_pre"], name=f"{tag}/Add"
            ),
        ]
        if net.alpha == 0:
            nodes.append(helper.make_node("Relu", [f"{tag}_pre"], [tag], name=f"{tag}/Relu"))
        else:
            nodes.append(
                helper.make_node(
                    "LeakyRelu", [f"{tag}_pre"], [tag], name=f"{tag}/LeakyRelu", alpha=net.alpha
                )
            )
        prev = tag
    inits += [
        numpy_helper.from_array(net.v.reshape(-1, 1), "out.weight"),
        numpy_helper.from_array(np.array([net.c], dtype=np.float32), "out.bias"),
    ]
    nodes += [
        helper.make_node("MatMul", [prev, "out.weight"], ["out_mm"], name="out/MatMul"),
        helper.make_node("Add", ["out_mm", "out.bias"], ["output"], name="out/Add"),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", net.d])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="onnx-am models/make_exact_family.py",
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    OUT_DIR.mkdir(exist_ok=True)
    entries = {}
    for seed, (name, kind, net) in enumerate(family()):
        path = OUT_DIR / f"{name}.onnx"
        onnx.save(to_onnx(net, name), path)
        exact = exact_maximum(net)
        check_no_point_exceeds(net, exact["max"], seed)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        argmax = np.asarray(exact["argmax"], dtype=np.float32)[None]
        ort_value = float(session.run(None, {"input": argmax})[0][0, 0])
        start_value = float(forward64(net, np.zeros((1, net.d)))[0])
        entries[name] = {
            "file": f"exact_family/{name}.onnx",
            "kind": kind,
            "d": net.d,
            "layers": len(net.layers),
            "activation": "Relu" if net.alpha == 0 else "LeakyRelu",
            "alpha": net.alpha,
            "target": "output:0",
            "last_hidden": f"hidden{len(net.layers)}",
            "max": exact["max"],
            "argmax": [round(v, 9) for v in exact["argmax"]],
            "solver_bound": exact["bound"],
            "solver_gap": exact["gap"],
            "onnxruntime_at_argmax": ort_value,
            "value_at_0": start_value,
        }
        print(f"{name:24s} {kind:6s} max {exact['max']:10.5f}  f(0) {start_value:9.4f}")
    doc = {
        "box": [-1.0, 1.0],
        "how": "exact maximum by MILP (scipy.optimize.milp / HiGHS, big-M rectifiers, interval "
        "bounds); verified: value at argmax (float64) within 1e-7 of the solver bound, no "
        "sampled point or corner above it, onnxruntime at the argmax",
        "networks": entries,
    }
    JSON_PATH.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
