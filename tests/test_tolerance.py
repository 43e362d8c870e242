"""One agreement rule with onnxruntime, used by the parity check and by the cross-check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper

from onnx_am import check_parity, import_onnx, parse_targets
from onnx_am.domain import InputDomain
from onnx_am.reference.crosscheck import crosscheck
from onnx_am.reference.tolerance import agrees, allowed_difference, within_tolerance


def test_agreement_rule_is_relative_above_one_absolute_below():
    assert agrees(1000.0, 1000.09) and not agrees(1000.0, 1000.2)
    assert agrees(-1000.0, -1000.09) and not agrees(-1000.0, -1000.2)
    assert agrees(0.0, 9e-5) and not agrees(0.0, 2e-4)
    assert agrees(0.5, 0.5 + 9e-5) and not agrees(0.5, 0.5 + 2e-4)
    assert not agrees(float("nan"), 0.0) and not agrees(0.0, float("inf"))
    assert allowed_difference(0.01) == allowed_difference(1.0) == 1e-4
    assert allowed_difference(300.0, 1e-3) == pytest.approx(0.3)
    assert within_tolerance(0.03, 300.0) and not within_tolerance(0.04, 300.0)
    assert not within_tolerance(float("inf"), 1.0) and not within_tolerance(0.0, float("nan"))


def _constant_half(make_model):
    """``y = 0 * x + 0.5`` on 4 inputs: every output is 0.5 in both runtimes."""
    nodes = [
        helper.make_node("Mul", ["x", "zero"], ["m"], name="mul"),
        helper.make_node("Add", ["m", "half"], ["y"], name="add"),
    ]
    inits = {"zero": np.zeros(4, np.float32), "half": np.full(4, 0.5, np.float32)}
    return import_onnx(make_model(nodes, [("x", ["N", 4])], ["y"], inits))


@pytest.mark.parametrize("offset", [5e-5, 8e-5, 2e-4, 1e-3])
def test_parity_and_crosscheck_reach_the_same_verdict(make_model, offset):
    """The torch graph is shifted by ``offset``; both checks judge the same difference alike.

    8e-5 on outputs of magnitude 0.5 is where the two used to disagree (parity allowed only
    ``1e-4 * 0.5 + 1e-6``).
    """
    imported = _constant_half(make_model)
    (half,) = [b for b in imported.module.buffers() if torch.all(b == 0.5)]
    half.add_(offset)
    expected = agrees(0.5 + offset, 0.5)
    assert expected == (offset < 1e-4)
    assert check_parity(imported, samples=2).passed == expected
    targets = parse_targets(["y:0-1"], imported)
    images = torch.zeros(len(targets), 4)
    values = [float(imported.run(images[:1], ["y"])[0][0, 0])] * len(targets)
    checks = crosscheck(imported, targets, images, values, InputDomain())
    assert [c.agrees for c in checks] == [expected] * len(targets)
