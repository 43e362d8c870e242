"""Train small CNNs on scikit-learn's bundled digits and export them to ONNX.

The sample models let onnx-am compare standard activation maximization with the
decoupled Leaky-ReLU backward on real (if tiny) image classifiers, one model per
rectifier kind.  Everything is offline: ``sklearn.datasets.load_digits`` ships with
scikit-learn, so nothing downloads.

Data: 1797 grayscale 8x8 digits, pixels 0..16 scaled to [-1, 1] by ``x / 8 - 1``,
input shape ``N x 1 x 8 x 8`` (NCHW).  Split: the first 80 % (1437 images) train,
the last 20 % (360 images) test, in the dataset's own order.

Variants (``models/digits_<name>.onnx``):

* ``relu``      Conv-ReLU x3 + Gemm-ReLU + Gemm.
* ``leaky001``  same, ``nn.LeakyReLU(0.01)``  -> ONNX ``LeakyRelu`` alpha=0.01.
* ``leaky02``   same, ``nn.LeakyReLU(0.2)``   -> ONNX ``LeakyRelu`` alpha=0.2.
* ``relu_bn``   Conv-BatchNorm-ReLU; exported in eval mode with ``TrainingMode.PRESERVE``
                so the ``BatchNormalization`` nodes stay in the graph (the default EVAL
                mode would fold them into the convolutions).
* ``prelu``     per-channel ``nn.PReLU`` -> ONNX ``PRelu`` with slope shape [C, 1, 1].
* ``deep_relu`` ResNet-style: stem conv + 4 basic residual blocks + Gemm, 10 ReLUs.

Export: ``torch.onnx.export(..., dynamo=False, opset_version=17)``, input ``input``,
output ``logits`` (10 units, pre-softmax), dynamic batch axis ``batch``.  Module names
are fixed, so ONNX node names are stable, e.g. ``/features/relu1/Relu`` with output
tensor ``/features/relu1/Relu_output_0``.

Writes ``models/digits_models.json`` with accuracy, rectifier kinds, sizes, training
time and the ONNX names of the rectifier outputs.

Re-make (5-15 s per model on 2 CPU cores)::

    python models/make_digits_cnns.py            # all variants
    python models/make_digits_cnns.py relu prelu # a subset (JSON entries are merged)
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
from sklearn.datasets import load_digits
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # cnn_export beside this script
from cnn_export import OPSET, describe, export, verify  # noqa: E402

HERE = Path(__file__).resolve().parent
JSON_PATH = HERE / "digits_models.json"
EPOCHS = 60
BATCH_SIZE = 32
LEARNING_RATE = 5e-3
SEED = 0


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(x_train, y_train, x_test, y_test)``; x is float32 N x 1 x 8 x 8 in [-1, 1]."""
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 8.0 - 1.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    n_train = int(0.8 * len(x))
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _conv_stack(act: Callable[[int], nn.Module], batchnorm: bool = False) -> nn.Sequential:
    """Three 3x3 convs (16, 32, 32 channels) with two 2x2 max-pools, then flatten."""
    layers: list[tuple[str, nn.Module]] = []
    channels = [(1, 16), (16, 32), (32, 32)]
    for i, (c_in, c_out) in enumerate(channels, start=1):
        layers.append((f"conv{i}", nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batchnorm)))
        if batchnorm:
            layers.append((f"bn{i}", nn.BatchNorm2d(c_out)))
        layers.append((f"relu{i}", act(c_out)))
        if i >= 2:
            layers.append((f"pool{i}", nn.MaxPool2d(2)))
    layers.append(("flatten", nn.Flatten()))
    return nn.Sequential(OrderedDict(layers))


def _head(
    act: Callable[[int], nn.Module], n_in: int = 32 * 2 * 2, n_hidden: int = 64
) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            [
                ("fc1", nn.Linear(n_in, n_hidden)),
                ("relu_fc1", act(n_hidden)),
                ("fc2", nn.Linear(n_hidden, 10)),
            ]
        )
    )


class SimpleCNN(nn.Module):
    """Conv stack + two-layer head; ``act(channels)`` builds each rectifier."""

    def __init__(self, act: Callable[[int], nn.Module], batchnorm: bool = False) -> None:
        super().__init__()
        self.features = _conv_stack(act, batchnorm)
        self.classifier = _head(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """ResNet basic block without BatchNorm: relu(x + conv(relu(conv(x))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu2 = nn.ReLU()
        nn.init.zeros_(self.conv2.weight)  # start each block as the identity
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(x + self.conv2(self.relu1(self.conv1(x))))


class DeepResNet(nn.Module):
    """Stem conv + 2 blocks at 8x8 (16 ch) + 2 blocks at 4x4 (32 ch) + head: 10 ReLUs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("stem", nn.Conv2d(1, 16, 3, padding=1)),
                    ("relu_stem", nn.ReLU()),
                    ("block1", BasicBlock(16)),
                    ("block2", BasicBlock(16)),
                    ("pool1", nn.MaxPool2d(2)),
                    ("widen", nn.Conv2d(16, 32, 1)),
                    ("block3", BasicBlock(32)),
                    ("block4", BasicBlock(32)),
                    ("pool2", nn.MaxPool2d(2)),
                    ("flatten", nn.Flatten()),
                ]
            )
        )
        self.classifier = _head(lambda _c: nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


VARIANTS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: SimpleCNN(lambda _c: nn.ReLU()),
    "leaky001": lambda: SimpleCNN(lambda _c: nn.LeakyReLU(0.01)),
    "leaky02": lambda: SimpleCNN(lambda _c: nn.LeakyReLU(0.2)),
    "relu_bn": lambda: SimpleCNN(lambda _c: nn.ReLU(), batchnorm=True),
    "prelu": lambda: SimpleCNN(lambda c: nn.PReLU(num_parameters=c, init=0.25)),
    "deep_relu": DeepResNet,
}


def train(model: nn.Module, data: tuple[np.ndarray, ...], seed: int) -> tuple[float, float]:
    """Train with Adam and cosine decay; returns ``(train_accuracy, test_accuracy)``."""
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
            xb = _augment(x_train[idx], gen)
            opt.zero_grad()
            loss_fn(model(xb), y_train[idx]).backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        train_acc = (model(x_train).argmax(1) == y_train).float().mean().item()
        test_acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    return train_acc, test_acc


def _augment(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shift by up to one pixel (background is -1), seeded by ``gen``."""
    dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
    padded = nn.functional.pad(xb, (1, 1, 1, 1), value=-1.0)
    return padded[:, :, 1 + dy : 9 + dy, 1 + dx : 9 + dx]


def make_variant(name: str, data: tuple[np.ndarray, ...]) -> dict:
    torch.manual_seed(SEED)
    model = VARIANTS[name]()
    t0 = time.perf_counter()
    train_acc, test_acc = train(model, data, seed=SEED)
    seconds = time.perf_counter() - t0
    path = HERE / f"digits_{name}.onnx"
    export(model, path, (1, 8, 8), preserve_bn=(name == "relu_bn"))
    ort_acc = verify(path, model, data[2], data[3])
    info = describe(path)
    kinds = Counter(r["op"] for r in info["rectifiers"])
    return {
        "file": path.name,
        "test_accuracy": round(ort_acc, 4),
        "train_accuracy": round(train_acc, 4),
        "torch_test_accuracy": round(test_acc, 4),
        "train_seconds_2cpu": round(seconds, 1),
        "rectifier_kinds": dict(sorted(kinds.items())),
        "n_params": sum(p.numel() for p in model.parameters()),
        "file_bytes": path.stat().st_size,
        "opset": OPSET,
        "producer": f"torch {torch.__version__.split('+')[0]} torch.onnx.export(dynamo=False)",
        **info,
    }


def main(names: list[str]) -> None:
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    data = load_split()
    report = json.loads(JSON_PATH.read_text()) if JSON_PATH.exists() else {}
    report["dataset"] = {
        "source": "sklearn.datasets.load_digits (bundled, offline)",
        "preprocessing": "x / 8 - 1  (pixels 0..16 -> [-1, 1]), NCHW",
        "input": {"name": "input", "shape": ["batch", 1, 8, 8], "range": [-1.0, 1.0]},
        "output": {"name": "logits", "shape": ["batch", 10]},
        "split": "first 1437 images train, last 360 test (dataset order)",
        "training": f"Adam one-cycle lr {LEARNING_RATE}, {EPOCHS} epochs, batch {BATCH_SIZE}, "
        f"random 1-pixel shifts, seed {SEED}, 2 threads, deterministic algorithms",
    }
    models = report.setdefault("models", {})
    for name in names:
        models[name] = make_variant(name, data)
        m = models[name]
        print(
            f"{name:10s} test {m['test_accuracy']:.4f}  train {m['train_accuracy']:.4f}  "
            f"{m['train_seconds_2cpu']:5.1f}s  {m['n_params']:6d} params  "
            f"{m['file_bytes'] / 1024:6.1f} KiB  {m['rectifier_kinds']}"
        )
    report["models"] = {k: models[k] for k in VARIANTS if k in models}
    JSON_PATH.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or list(VARIANTS))
