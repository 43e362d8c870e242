"""The known-answer family: the committed maxima are exact and the files compute them."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

#: whole audits, subprocesses or browsers: `pytest -m "not slow"` skips them
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FAMILY = json.loads((ROOT / "models" / "exact_family.json").read_text())["networks"]


def _maker():
    spec = importlib.util.spec_from_file_location(
        "make_exact_family", ROOT / "models" / "make_exact_family.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name]


def _net_from_onnx(maker, path: Path):
    """The network as the ONNX file stores it (weights read back, not regenerated)."""
    model = onnx.load(path)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    layers = []
    index = 1
    while f"hidden{index}.weight" in weights:
        layers.append((weights[f"hidden{index}.weight"], weights[f"hidden{index}.bias"]))
        index += 1
    acts = [n for n in model.graph.node if n.op_type in ("Relu", "LeakyRelu")]
    alpha = next((a.f for a in acts[0].attribute if a.name == "alpha"), 0.0)
    v = weights["out.weight"].reshape(-1)
    return maker.Net(tuple(layers), v, float(weights["out.bias"][0]), float(np.float32(alpha)))


def test_family_is_large_and_varied():
    assert len(FAMILY) >= 30
    assert {e["kind"] for e in FAMILY.values()} == {"dead", "narrow", "peak", "deep", "dead2"}
    assert {e["layers"] for e in FAMILY.values()} == {1, 2, 3, 4}
    assert max(e["d"] for e in FAMILY.values()) <= 16
    for entry in FAMILY.values():
        assert entry["max"] > entry["value_at_0"]  # something to find beyond the start
        assert entry["solver_gap"] <= 1e-7


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_onnxruntime_reaches_the_recorded_maximum_at_the_argmax(name):
    entry = FAMILY[name]
    session = ort.InferenceSession(
        str(ROOT / "models" / entry["file"]), providers=["CPUExecutionProvider"]
    )
    x = np.asarray(entry["argmax"], dtype=np.float32)[None]
    value = float(session.run(None, {"input": x})[0][0, 0])
    assert abs(value - entry["max"]) <= 1e-4 * max(1.0, abs(entry["max"]))


@pytest.mark.parametrize(
    "name", ["dead_d8_relu", "peak_d6_leaky001", "deep3_d6_relu", "dead2_d4_relu"]
)
def test_milp_on_the_stored_weights_gives_the_recorded_maximum(name):
    maker = _maker()
    net = _net_from_onnx(maker, ROOT / "models" / FAMILY[name]["file"])
    exact = maker.exact_maximum(net)
    assert abs(exact["max"] - FAMILY[name]["max"]) <= 1e-6 * max(1.0, abs(exact["max"]))


def test_milp_equals_vertex_enumeration_on_a_convex_net():
    maker = _maker()
    net = _net_from_onnx(maker, ROOT / "models" / FAMILY["dead_d12_relu"]["file"])
    corners = np.array(np.meshgrid(*[[-1.0, 1.0]] * net.d)).reshape(net.d, -1).T
    by_vertices = float(maker.forward64(net, corners).max())
    assert abs(maker.exact_maximum(net)["max"] - by_vertices) <= 1e-9 * by_vertices
