"""The engine on the committed sample models: known toy maxima and onnxruntime agreement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_engine_models import one_thread  # noqa: F401  (fixture)

from onnx_am import import_onnx
from onnx_am.domain import InputDomain
from onnx_am.engine.maximizer import AMConfig, maximize
from onnx_am.objectives import parse_targets
from onnx_am.reference.crosscheck import crosscheck

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
TOYS = json.loads((ROOT / "models" / "toy_functions.json").read_text())["functions"]


@pytest.mark.parametrize(("name", "output"), [("toy_relu_dead_d2", 0), ("toy_relu_dead_d8", 0)])
def test_toy_dead_at_zero_standard_stuck_decoupled_and_proxy_reach_the_maximum(name, output):
    toy = TOYS[name]
    known = toy["outputs"][output]
    imported = import_onnx(ROOT / "models" / toy["file"])
    methods = ["standard", "decoupled(0.3)", "proxy(0.3)"]
    report = maximize(imported, [f"output:{output}"], methods, AMConfig.of(steps=80, start="mid"))
    standard, decoupled, proxy = report.results
    assert standard.activation == pytest.approx(known["value_at_zero"], abs=1e-6)
    for result in (decoupled, proxy):
        assert result.activation >= 0.99 * known["max"]
        np.testing.assert_allclose(result.image, known["argmax"], atol=1e-3)
    assert all(r.agrees for r in report.results)


SAMPLES = [
    ("models/digits_relu.onnx", None, ["logits:0-9", "/features/relu2/Relu_output_0:0-3@center"]),
    ("models/digits_prelu.onnx", None, ["logits:0-9"]),
    ("models/keras_digits.onnx", None, ["keras_digits_1/relu2_1/Relu:0:0-3"]),
    ("tests/fixtures/tf2onnx_cnn.onnx", [1, 16, 16, 3], ["tf2onnx_cnn_1/relu2_1/Relu:0:0-3"]),
    ("tests/fixtures/fixed_batch1_reshape.onnx", None, None),
]


@pytest.mark.parametrize(
    ("path", "shape", "targets"), SAMPLES, ids=[s[0].split("/")[-1] for s in SAMPLES]
)
def test_every_result_agrees_with_onnxruntime_on_the_original_model(path, shape, targets):
    imported = import_onnx(ROOT / path, input_shape=shape)
    config = AMConfig.of(steps=8, lr=0.1, restarts=1)
    report = maximize(imported, targets, ["standard", "decoupled(0.3)", "proxy(0.5)"], config)
    assert len(report.results) >= 6
    for result in report.results:
        assert result.agrees, (result.target, result.activation, result.activation_onnxruntime)
        assert result.activation_onnxruntime is not None
        assert result.image.shape == imported.input.sample_shape


def test_crosscheck_catches_a_wrong_value_and_a_wrong_layout():
    imported = import_onnx(ROOT / "models" / "keras_digits.onnx")
    targets = parse_targets(["keras_digits_1/relu2_1/Relu:0:1"], imported)
    image = torch.rand(
        (1, *imported.input.sample_shape), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        value = float(targets[0].value(imported.run(image, [targets[0].tensor])[0])[0])
    domain = InputDomain()
    assert crosscheck(imported, targets, image, [value], domain)[0].agrees
    assert not crosscheck(imported, targets, image, [value * 1.01 + 0.01], domain)[0].agrees
    transposed = image.reshape(1, 1, 8, 8).transpose(2, 3).reshape(image.shape)
    assert not crosscheck(imported, targets, transposed, [value], domain)[0].agrees
