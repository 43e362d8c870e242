"""Export, check and describe the small trained CNNs that the ``make_*_cnns.py`` scripts make.

Shared by ``make_digits_cnns.py`` and ``make_mnist_cnns.py``; imported from the script's own
folder (both put it on ``sys.path``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

OPSET = 17
RECTIFIER_OPS = ("Relu", "LeakyRelu", "PRelu", "Clip", "HardSigmoid", "HardSwish")


def export(
    model: nn.Module, path: Path, sample_shape: Sequence[int], preserve_bn: bool = False
) -> None:
    """Legacy (TorchScript) export, opset 17, input ``input`` with a dynamic batch.

    Args:
        model: the trained network.
        path: the ``.onnx`` file to write.
        sample_shape: one input sample's shape, e.g. ``(1, 8, 8)``.
        preserve_bn: keep BatchNormalization nodes (training-mode export) instead of folding.
    """
    mode = torch.onnx.TrainingMode.PRESERVE if preserve_bn else torch.onnx.TrainingMode.EVAL
    torch.onnx.export(
        model,
        (torch.zeros(1, *sample_shape),),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        training=mode,
        do_constant_folding=True,
    )


def verify(path: Path, model: nn.Module, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Check the ONNX file, compare with torch, return the onnxruntime test accuracy.

    Raises:
        RuntimeError: onnxruntime's logits differ from torch's by more than 1e-4.
    """
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"input": x_test})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x_test)).numpy()
    max_err = float(np.abs(logits - ref).max())
    if max_err > 1e-4:
        raise RuntimeError(f"{path.name}: onnxruntime differs from torch by {max_err}")
    return float((logits.argmax(1) == y_test).mean())


def describe(path: Path) -> dict:
    """Rectifier ops, their output tensor names, and op counts of an ONNX file."""
    graph = onnx.load(str(path)).graph
    ops = Counter(node.op_type for node in graph.node)
    rectifiers = []
    for node in graph.node:
        if node.op_type in RECTIFIER_OPS:
            entry = {"op": node.op_type, "node": node.name, "output": node.output[0]}
            entry.update({a.name: round(a.f, 6) for a in node.attribute if a.name == "alpha"})
            rectifiers.append(entry)
    return {"op_counts": dict(sorted(ops.items())), "rectifiers": rectifiers}
