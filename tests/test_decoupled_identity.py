"""The rewritten graph computes exactly what the imported one computes (``torch.equal``).

Checked on a torch-exported CNN built in memory (every rectifier kind torch exports, next to
non-linearities that must stay untouched) and on every sample model and fixture on disk.
"""

from __future__ import annotations

import io
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from onnx_am import import_onnx
from onnx_am.errors import InputSpecError, OnnxAmError
from onnx_am.methods import STANDARD, parse_method
from onnx_am.passes import decouple_rectifiers

ROOT = Path(__file__).resolve().parents[1]
ON_DISK = sorted([*ROOT.glob("models/*.onnx"), *ROOT.glob("tests/fixtures/*.onnx")])


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act2 = nn.PReLU(4, init=0.2)
        self.pool = nn.MaxPool2d(2)
        self.act3 = nn.ReLU6()
        self.act4 = nn.Hardswish()
        self.fc1 = nn.Linear(16, 8)
        self.act5 = nn.LeakyReLU(0.05)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        x = self.act2(self.conv2(self.act1(self.bn(self.conv1(x)))))
        x = self.act4(self.act3(self.pool(x) * 3.0))
        x = self.act5(self.fc1(x.flatten(1)))
        return torch.sigmoid(self.fc2(x))


def exported_cnn() -> bytes:
    torch.manual_seed(0)  # weights only; the export is deterministic after this
    model = SmallCNN().eval()
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 4, 4),),
        buffer,
        dynamo=False,
        opset_version=14,
        input_names=["image"],
        output_names=["probs"],
        dynamic_axes={"image": {0: "batch"}, "probs": {0: "batch"}},
    )
    return buffer.getvalue()


def import_any(source):
    """Import, filling unknown dims (batch 1, others 16) when the model leaves them open."""
    try:
        return import_onnx(source)
    except InputSpecError:
        model = onnx.load(str(source))
        initializers = {tensor.name for tensor in model.graph.initializer}
        graph_input = next(value for value in model.graph.input if value.name not in initializers)
        dims = graph_input.type.tensor_type.shape.dim
        shape = [1 if i == 0 else (dim.dim_value or 16) for i, dim in enumerate(dims)]
        return import_onnx(source, input_name=graph_input.name, input_shape=shape)


def assert_exact(imported, x):
    """Rewritten == original: values unset, with decoupled rows, and standard gradients."""
    result = decouple_rectifiers(imported)
    names = imported.output_names
    original = imported.extractor(names)
    rewritten = imported.extractor(names, module=result.module)
    for a, b in zip(original(x), rewritten(x), strict=True):
        assert torch.equal(a, b)
    result.control.set_rows([parse_method("decoupled(0.3)")] * x.shape[0])
    for a, b in zip(original(x), rewritten(x), strict=True):
        assert torch.equal(a, b)
    result.control.set_rows([STANDARD] * x.shape[0])
    grads = []
    for extractor in (original, rewritten):
        leaf = x.clone().requires_grad_(True)
        sum(out.float().sum() for out in extractor(leaf) if out.is_floating_point()).backward()
        grads.append(leaf.grad)
    assert torch.equal(grads[0], grads[1])
    return result


def test_exported_cnn_rewrites_rectifiers_exactly_and_lists_the_rest():
    imported = import_onnx(exported_cnn())
    x = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    result = assert_exact(imported, x)
    assert [r.op_type for r in result.rewritten] == ["Relu", "PRelu", "Clip", "LeakyRelu"]
    assert len(result.rewritten[1].alpha) == 4
    untouched = [u.op_type for u in result.untouched]
    assert untouched == ["MaxPool", "HardSwish", "Sigmoid"]
    result.control.set_rows([parse_method("proxy(0.5)")] * 3)
    assert not torch.equal(imported.run(x, module=result.module)[0], imported.run(x)[0])


@pytest.mark.slow
@pytest.mark.parametrize("path", ON_DISK, ids=[p.name for p in ON_DISK])
def test_models_on_disk_rewritten_exactly(path):
    try:
        imported = import_any(path)
    except OnnxAmError as exc:  # another engineer's importer case, not this pass
        pytest.skip(f"{path.name} does not import: {exc}")
    batch = 1 if imported.batch.mode == "rowwise" else 2
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((batch, *imported.input.sample_shape), generator=generator) * 2 - 1
    result = assert_exact(imported, x.to(getattr(torch, imported.input.dtype)))
    plain = {node.op_type for node in imported.prepared.graph.node} & {"Relu", "LeakyRelu", "PRelu"}
    assert plain <= {record.op_type for record in result.rewritten}, path.name
