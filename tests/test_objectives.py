"""Targets by ONNX tensor name: parsing, expansion, errors, and the per-row reduction."""

from __future__ import annotations

import pytest
import torch
from test_engine_models import (
    one_thread,  # noqa: F401  (fixture)
    tiny_cnn,
)

from onnx_am import import_onnx
from onnx_am.errors import TargetError
from onnx_am.objectives import (
    Target,
    channel,
    default_targets,
    neuron,
    parse_targets,
    resolve_targets,
    row_values,
    unit,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cnn():
    return import_onnx(tiny_cnn())


def test_single_unit_list_and_range(cnn):
    targets = parse_targets(["logits:2", "logits:0,1", "conv2:1-3"], cnn)
    assert [t.name for t in targets] == [
        "logits:2", "logits:0", "logits:1", "conv2:1", "conv2:2", "conv2:3"
    ]  # fmt: skip
    assert targets[0].kind == "unit" and targets[3].kind == "channel"


def test_neuron_position_and_center(cnn):
    first, centre = parse_targets(["act2:4@0,5", "act2:4@center"], cnn)
    assert first == Target("act2", 4, "neuron", (0, 5))
    assert centre.position == (3, 3) and centre.name == "act2:4@3,3"


def test_bare_tensor_is_all_units_capped(cnn):
    assert [t.unit for t in parse_targets("conv2", cnn)] == [0, 1, 2, 3, 4]
    assert [t.unit for t in parse_targets("conv2", cnn, cap=2)] == [0, 1]
    assert [t.name for t in default_targets(cnn)] == ["logits:0", "logits:1", "logits:2"]


def test_duplicates_removed(cnn):
    assert len(parse_targets(["logits:1", "logits:0-2"], cnn)) == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope:3", "no tensor named 'nope'"),
        ("nope", "no tensor named 'nope'"),
        ("logits:3", "valid units are 0-2"),
        ("conv2:5", "valid units are 0-4"),
        ("conv2:2-1", "out of range"),
        ("logits:x", "cannot parse units"),
        ("conv2:1@6,0", "valid: 0-5 x 0-5"),
        ("conv2:1@1", "out of range"),
        ("logits:1@0", "has no space"),
    ],
)
def test_errors_name_the_value_and_range(cnn, text, message):
    with pytest.raises(TargetError, match=message.replace("(", r"\(")):
        parse_targets([text], cnn)


def test_factories_and_resolve_check_ranges(cnn):
    resolved = resolve_targets(cnn, [unit("logits", 1), "conv2:0", neuron("act2", 2, 1, 1)])
    assert [t.name for t in resolved] == ["logits:1", "conv2:0", "act2:2@1,1"]
    with pytest.raises(TargetError, match="valid units are 0-4"):
        resolve_targets(cnn, [channel("conv2", 7)])
    with pytest.raises(TargetError, match="no targets"):
        resolve_targets(cnn, [])


def test_tensor_names_with_colons():
    model = tiny_cnn()
    for node in model.graph.node:
        node.output[:] = [name.replace("act2", "dense/Relu:0") for name in node.output]
        node.input[:] = [name.replace("act2", "dense/Relu:0") for name in node.input]
    imported = import_onnx(model)
    targets = parse_targets(["dense/Relu:0:3", "dense/Relu:0"], imported, cap=2)
    assert [(t.tensor, t.unit) for t in targets] == [
        ("dense/Relu:0", 3),
        ("dense/Relu:0", 0),
        ("dense/Relu:0", 1),
    ]


def test_row_values_match_each_target_alone():
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "a": torch.randn(4, 3, 5, 5, generator=generator),
        "b": torch.randn(4, 7, generator=generator),
    }
    targets = [channel("a", 2), unit("b", 6), neuron("a", 1, 4, 0), neuron("a", 0)]
    got = row_values(targets, tensors)
    want = [
        tensors["a"][0, 2].mean(),
        tensors["b"][1, 6],
        tensors["a"][2, 1, 4, 0],
        tensors["a"][3, 0, 2, 2],
    ]
    torch.testing.assert_close(got, torch.stack(want))
    for row, target in enumerate(targets):
        alone = target.value(tensors[target.tensor])[row]
        torch.testing.assert_close(got[row], alone)
