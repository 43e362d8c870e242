"""Small token models whose maximum over every sequence of ids is known exactly.

Each model maps ids ``v_0 .. v_{L-1}`` (``input_ids``, int64 ``[batch, L]``) to ``C`` scores:

    x_l = E[v_l] + P_l                                   (embedding Gather, or a OneHot: E = I)
    h_l = relu(W_0 x_l + W_1 x_{l+1} + b)                 (a Conv over the sequence, kernel k)
    s_l = U h_l + c                                      (a 1x1 Conv, C channels)
    logits = sum_l s_l   or   max_l s_l                  (ReduceSum / ReduceMax)

With kernel ``k = 1`` (``unary``) each position's score depends on its own token only; with
``k = 2`` (``pair``) on a token and its right neighbour, so greedy choices can be wrong. Unit
``c``'s maximum over all ``V^L`` sequences is then exact by dynamic programming over positions
(sum pooling: a Viterbi pass over the ``[V, V]`` tables ``phi_l(a, b)``; max pooling: the
largest entry of any table), computed in float64 from the stored float32 weights, not with
onnx-am. Some models also take an ``attention_mask`` (multiplied into ``x``; the exact
maximum holds for the all-ones mask that onnx-am feeds by default), and ``byte`` models use
a OneHot of depth 256 instead of an embedding.

Files: ``models/token_family/<name>.onnx`` and ``models/token_family.json`` with each model's
kind, V, L, pooling, and per unit the exact maximum, an argmax sequence and onnxruntime's
value on it. Re-make (seconds, deterministic)::

    python models/make_token_family.py
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "token_family"
JSON_PATH = HERE / "token_family.json"
OPSET = 17
IR_VERSION = 8
WIDTH, HIDDEN, UNITS = 8, 16, 4


@dataclass(frozen=True)
class Spec:
    name: str
    vocab: int
    length: int
    kernel: int
    pooling: str  # "sum" | "max"
    seed: int
    onehot: bool = False
    mask: bool = False


SPECS = [
    Spec("unary_sum_v16", 16, 6, 1, "sum", 1),
    Spec("unary_max_v32", 32, 8, 1, "max", 2),
    Spec("pair_sum_v16", 16, 6, 2, "sum", 3, mask=True),
    Spec("pair_sum_v32", 32, 8, 2, "sum", 4),
    Spec("pair_max_v32", 32, 8, 2, "max", 5),
    Spec("pair_sum_v64", 64, 8, 2, "sum", 6, mask=True),
    Spec("pair_max_v64", 64, 6, 2, "max", 7),
    Spec("byte_pair_sum", 256, 6, 2, "sum", 8, onehot=True),
]


def weights(spec: Spec) -> dict[str, np.ndarray]:
    """The model's float32 weights, seeded."""
    rng = np.random.default_rng(spec.seed)
    width = spec.vocab if spec.onehot else WIDTH
    scale = 1.0 / np.sqrt(width * spec.kernel)
    return {
        "E": (np.eye(spec.vocab) if spec.onehot else rng.normal(0, 1, (spec.vocab, WIDTH))).astype(
            np.float32
        ),
        "P": rng.normal(0, 0.5 if not spec.onehot else 0.0, (spec.length, width)).astype(
            np.float32
        ),
        "W": (
            rng.normal(0, 1, (HIDDEN, width, spec.kernel)) * scale * (8 if spec.onehot else 1)
        ).astype(np.float32),
        "b": rng.normal(-0.3, 0.3, HIDDEN).astype(np.float32),
        "U": (rng.normal(0, 1, (UNITS, HIDDEN, 1)) / np.sqrt(HIDDEN)).astype(np.float32),
        "c": rng.normal(0, 0.1, UNITS).astype(np.float32),
    }


def build(spec: Spec, w: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The ONNX graph of the module docstring."""
    L = spec.length
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", L])]
    inits = [numpy_helper.from_array(w[k], k) for k in ("P", "W", "b", "U", "c")]
    if spec.pooling == "sum":
        inits.append(numpy_helper.from_array(np.array([2], np.int64), "axes_seq"))
    nodes = []
    if spec.onehot:
        inits.append(numpy_helper.from_array(np.array(spec.vocab, np.int64), "depth"))
        inits.append(numpy_helper.from_array(np.array([0, 1], np.float32), "onoff"))
        nodes.append(helper.make_node("OneHot", ["input_ids", "depth", "onoff"], ["onehot"]))
        embedded = "onehot"
    else:
        inits.append(numpy_helper.from_array(w["E"], "E"))
        nodes.append(helper.make_node("Gather", ["E", "input_ids"], ["embeddings"], axis=0))
        embedded = "embeddings"
    nodes.append(helper.make_node("Add", [embedded, "P"], ["x"]))
    seq = "x"
    if spec.mask:
        inputs.append(
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", L])
        )
        inits.append(numpy_helper.from_array(np.array([-1], np.int64), "axes_last"))
        nodes += [
            helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["mask_f", "axes_last"], ["mask_3d"]),
            helper.make_node("Mul", ["x", "mask_3d"], ["x_masked"]),
        ]
        seq = "x_masked"
    nodes += [
        helper.make_node("Transpose", [seq], ["x_t"], perm=[0, 2, 1]),
        helper.make_node("Conv", ["x_t", "W", "b"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["hidden"]),
        helper.make_node("Conv", ["hidden", "U", "c"], ["scores"]),
        helper.make_node(
            "ReduceSum" if spec.pooling == "sum" else "ReduceMax",
            ["scores", "axes_seq"] if spec.pooling == "sum" else ["scores"],
            ["logits"],
            keepdims=0,
            **({} if spec.pooling == "sum" else {"axes": [2]}),
        ),
    ]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", UNITS])
    graph = helper.make_graph(nodes, spec.name, inputs, [output], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def tables(spec: Spec, w: dict[str, np.ndarray]) -> np.ndarray:
    """``phi[l, c, a, b]`` (pair) or ``phi[l, c, a, 0]`` (unary): unit ``c``'s score at window
    ``l`` for tokens ``a`` (at ``l``) and ``b`` (at ``l + 1``), float64."""
    E, P = w["E"].astype(np.float64), w["P"].astype(np.float64)
    W, b = w["W"].astype(np.float64), w["b"].astype(np.float64)
    U, c = w["U"][:, :, 0].astype(np.float64), w["c"].astype(np.float64)
    windows = spec.length - spec.kernel + 1
    out = []
    for at in range(windows):
        first = (E + P[at]) @ W[:, :, 0].T  # [V, H]
        if spec.kernel == 1:
            pre = first[:, None, :] + b
        else:
            second = (E + P[at + 1]) @ W[:, :, 1].T
            pre = first[:, None, :] + second[None, :, :] + b  # [V, V, H]
        out.append(np.einsum("abh,ch->cab", np.maximum(pre, 0), U) + c[:, None, None])
    return np.stack(out)


def exact_maximum(spec: Spec, phi: np.ndarray, unit: int) -> tuple[float, list[int]]:
    """Unit ``unit``'s maximum over all sequences and one sequence attaining it."""
    table = phi[:, unit]  # [windows, V, V or 1]
    if spec.pooling == "max":
        at, a, b = np.unravel_index(int(np.argmax(table)), table.shape)
        ids = [0] * spec.length
        ids[at] = int(a)
        if spec.kernel == 2:
            ids[at + 1] = int(b)
        return float(table.max()), ids
    if spec.kernel == 1:
        best = table[:, :, 0]
        return float(best.max(1).sum()), [int(i) for i in best.argmax(1)]
    # Viterbi: score[b] = best total of windows 0..l ending with token b at position l + 1
    score = table[0].max(0)
    back = [table[0].argmax(0)]
    for at in range(1, table.shape[0]):
        total = score[:, None] + table[at]  # [token at `at`, token at `at + 1`]
        back.append(total.argmax(0))
        score = total.max(0)
    last = int(score.argmax())
    ids = [last]
    for pointers in reversed(back):
        ids.append(int(pointers[ids[-1]]))
    return float(score.max()), ids[::-1]


def onnxruntime_value(model: onnx.ModelProto, ids: list[int], unit: int, mask: bool) -> float:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"input_ids": np.array([ids], np.int64)}
    if mask:
        feed["attention_mask"] = np.ones((1, len(ids)), np.int64)
    return float(session.run(["logits"], feed)[0][0, unit])


def main() -> None:
    OUT_DIR.mkdir(exist_ok=True)
    records = []
    for spec in SPECS:
        w = weights(spec)
        model = build(spec, w)
        onnx.save(model, OUT_DIR / f"{spec.name}.onnx")
        phi = tables(spec, w)
        units = []
        for unit in range(UNITS):
            value, ids = exact_maximum(spec, phi, unit)
            check = onnxruntime_value(model, ids, unit, spec.mask)
            if abs(check - value) > 1e-4 * max(1.0, abs(value)):
                raise SystemExit(f"{spec.name}:{unit}: onnxruntime {check} != exact {value}")
            units.append({"unit": unit, "exact": value, "argmax": ids, "onnxruntime": check})
        records.append(
            {
                "name": spec.name,
                "file": f"token_family/{spec.name}.onnx",
                "vocab": spec.vocab,
                "length": spec.length,
                "kernel": spec.kernel,
                "pooling": spec.pooling,
                "onehot": spec.onehot,
                "mask": spec.mask,
                "units": units,
            }
        )
        print(spec.name, [round(u["exact"], 4) for u in units])
    JSON_PATH.write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
