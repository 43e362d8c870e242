"""Train the digits CNN with SiLU and with HardSwish, for the smooth-activation benchmark.

The same network, data, split and training as ``make_digits_cnns.py`` (three 3x3 convs,
two max-pools, a 64-unit hidden layer, Adam one-cycle, 60 epochs, seed 0), with every
rectifier replaced:

* ``silu``       ``nn.SiLU``      -> ONNX ``Sigmoid`` + ``Mul`` (how torch exports SiLU).
* ``hardswish``  ``nn.Hardswish`` -> ONNX ``HardSwish`` (opset 17).

Writes ``models/digits_<name>.onnx`` and ``models/digits_smooth_models.json`` (accuracy,
activation op counts, size). Re-make (about 10-20 s per model on 2 CPU cores)::

    python models/make_digits_smooth.py
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import onnx
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnn_export import OPSET, export, verify  # noqa: E402
from make_digits_cnns import SEED, SimpleCNN, load_split, train  # noqa: E402

HERE = Path(__file__).resolve().parent
JSON_PATH = HERE / "digits_smooth_models.json"
VARIANTS = {"silu": nn.SiLU, "hardswish": nn.Hardswish}


def make_variant(name: str, data) -> dict:
    torch.manual_seed(SEED)
    model = SimpleCNN(lambda _c: VARIANTS[name]())
    t0 = time.perf_counter()
    train_acc, _ = train(model, data, seed=SEED)
    seconds = time.perf_counter() - t0
    path = HERE / f"digits_{name}.onnx"
    export(model, path, (1, 8, 8))
    ops = Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    return {
        "file": path.name,
        "test_accuracy": round(verify(path, model, data[2], data[3]), 4),
        "train_accuracy": round(train_acc, 4),
        "train_seconds_2cpu": round(seconds, 1),
        "activation_ops": {
            op: n for op, n in sorted(ops.items()) if op in ("Sigmoid", "Mul", "HardSwish")
        },  # fmt: skip
        "n_params": sum(p.numel() for p in model.parameters()),
        "file_bytes": path.stat().st_size,
        "opset": OPSET,
    }


def main() -> None:
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    data = load_split()
    report = {name: make_variant(name, data) for name in VARIANTS}
    for name, entry in report.items():
        print(name, entry)
    JSON_PATH.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
