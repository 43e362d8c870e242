"""Shared, generic test helpers: tiny ONNX models built in memory, fixture paths.

Append new fixtures at the end; keep this file small.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

# What ``import onnx_am`` sets, set before any test module loads torch (OpenMP reads it then):
# idle OpenMP threads spin briefly before they sleep, so the suite is not slowed tenfold on a
# machine whose cores other processes want (benchmarks/results/wait_policy_loaded.md).
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODELS = Path(__file__).resolve().parents[1] / "models"


def build_model(
    nodes: list[onnx.NodeProto],
    inputs: list[tuple[str, list]],
    outputs: list[str],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 17,
    input_type: int = onnx.TensorProto.FLOAT,
) -> onnx.ModelProto:
    """A model from nodes; ``inputs`` are ``(name, shape)`` (str dims are symbolic)."""
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(n, input_type, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()],
    )
    ir = 8 if opset <= 20 else 10
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)


@pytest.fixture
def make_model():
    """The :func:`build_model` factory, as a fixture."""
    return build_model


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def models_dir() -> Path:
    return MODELS


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
