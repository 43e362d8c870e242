"""Train a small digits network with SiLU and with HardSwish, for the smooth-activation benchmark.

The data, split and training loop of ``make_digits_cnns.py`` (Adam one-cycle, random 1-pixel
shifts, seed 0), on a smaller network so that it trains in seconds even on a loaded machine:
one 3x3 conv (8 channels), a 2x2 max-pool, two 64-unit hidden layers, 10 logits; 30 epochs.
The activations:

* ``silu``       ``nn.SiLU``      -> ONNX ``Sigmoid`` + ``Mul`` (how torch exports SiLU).
* ``hardswish``  ``nn.Hardswish`` -> ONNX ``HardSwish`` (opset 17).

Writes ``models/digits_<name>.onnx`` and ``models/digits_smooth_models.json`` (accuracy,
activation op counts, size). Re-make (well under a minute per model on 2 CPU cores)::

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
import make_digits_cnns  # noqa: E402
from cnn_export import OPSET, export, verify  # noqa: E402
from make_digits_cnns import SEED, load_split, train  # noqa: E402

HERE = Path(__file__).resolve().parent
JSON_PATH = HERE / "digits_smooth_models.json"
VARIANTS = {"silu": nn.SiLU, "hardswish": nn.Hardswish}
EPOCHS = 30


def small_net(act) -> nn.Sequential:
    """conv(1->8, 3x3) - act - maxpool 2 - flatten - fc 128->64 - act - fc 64->64 - act - fc 10."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), act(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(128, 64), act(), nn.Linear(64, 64), act(), nn.Linear(64, 10),
    )  # fmt: skip


def make_variant(name: str, data) -> dict:
    torch.manual_seed(SEED)
    model = small_net(VARIANTS[name])
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
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    make_digits_cnns.EPOCHS = EPOCHS
    data = load_split()
    report = {name: make_variant(name, data) for name in VARIANTS}
    for name, entry in report.items():
        print(name, entry)
    JSON_PATH.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
