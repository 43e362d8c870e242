"""Clip with computed bounds and ScatterND with every reduction: parity and float64 gradients."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from onnx import helper

from onnx_am import check_parity, decouple_rectifiers, import_onnx
from onnx_am.importer.converters.clip import OnnxDynamicClip
from onnx_am.importer.converters.scatter import REDUCTIONS, OnnxScatterNDReduce

I64 = np.int64
F32 = np.float32


def _gradcheck(imported, shape: list[int]) -> None:
    """d outputs / d x of the converted graph in float64 against finite differences."""
    module = copy.deepcopy(imported.module).double()
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: module(t), (x,), atol=1e-6)


def _clip_with_floor(make_model, opset: int = 13):
    """``Clip(x, ReduceMax(x) - 0.5)``: the audio front end's dynamic floor (a scalar, as
    onnxruntime requires: over a batch it mixes rows, so rows run one at a time)."""
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["peak"], name="peak", keepdims=0),
        helper.make_node("Sub", ["peak", "range"], ["floor"], name="floor"),
        helper.make_node("Clip", ["x", "floor"], ["y"], name="clip"),
    ]
    return make_model(nodes, [("x", ["N", 6])], ["y"], {"range": np.array(0.5, F32)}, opset)


def test_clip_with_a_computed_floor_matches_onnxruntime(make_model):
    for opset in (11, 13, 17):
        imported = import_onnx(_clip_with_floor(make_model, opset))
        assert any(isinstance(m, OnnxDynamicClip) for m in imported.module.modules())
        assert imported.batch.mode == "rowwise"
        result = check_parity(imported, samples=3)
        assert result.passed, (opset, result.summary())


def test_clip_with_a_computed_top_only_matches_onnxruntime(make_model):
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], name="mean", keepdims=0),
        helper.make_node("Clip", ["x", "", "mean"], ["y"], name="clip"),
    ]
    imported = import_onnx(make_model(nodes, [("x", ["N", 5])], ["y"], {}, 13))
    assert check_parity(imported, samples=3).passed


def test_clip_with_a_bound_fed_as_an_input_one_node(make_model):
    nodes = [helper.make_node("Clip", ["x", "low", "high"], ["y"], name="clip")]
    model = make_model(nodes, [("x", ["N", 5]), ("low", []), ("high", [])], ["y"], {}, 13)
    imported = import_onnx(model, input_name="x", feeds={"low": -0.25, "high": 0.5})
    result = check_parity(imported, samples=3)
    assert result.passed, result.summary()
    (y,) = imported.run(torch.tensor([[-1.0, -0.2, 0.0, 0.4, 0.9]]))
    np.testing.assert_allclose(y.numpy(), [[-0.25, -0.2, 0.0, 0.4, 0.5]])


def test_constant_clip_keeps_onnx2torch_modules(make_model):
    nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip")]
    inits = {"lo": np.array(0.0, F32), "hi": np.array(6.0, F32)}
    imported = import_onnx(make_model(nodes, [("x", ["N", 5])], ["y"], inits, 13))
    assert any(isinstance(m, torch.nn.ReLU6) for m in imported.module.modules())
    assert [r.op_type for r in decouple_rectifiers(imported).rewritten] == ["Clip"]


@pytest.mark.parametrize(("bounds", "module"), [(["lo", ""], torch.nn.ReLU), (["", "hi"], None)])
def test_clip_with_an_empty_bound_name(make_model, bounds, module):
    # the torch exporter writes clamp(min=0) as Clip(x, 0.0, ""); onnx2torch reads the empty
    # name as a missing constant (arabic-name-romanizer's encoder, benchmarks/transformer_models)
    nodes = [helper.make_node("Clip", ["x", *bounds], ["y"], name="clip")]
    inits = {"lo": np.array(0.0, F32), "hi": np.array(0.5, F32)}
    imported = import_onnx(make_model(nodes, [("x", ["N", 5])], ["y"], inits, 17))
    result = check_parity(imported, samples=3)
    assert result.passed, result.summary()
    if module is not None:
        assert any(isinstance(m, module) for m in imported.module.modules())
    (y,) = imported.run(torch.tensor([[-1.0, -0.2, 0.0, 0.4, 0.9]]))
    want = [0.0, 0.0, 0.0, 0.4, 0.9] if module else [-1.0, -0.2, 0.0, 0.4, 0.5]
    np.testing.assert_allclose(y.numpy(), [want])


def test_dynamic_clip_gradient_float64_and_left_alone_by_the_pass(make_model):
    imported = import_onnx(_clip_with_floor(make_model))
    _gradcheck(imported, [2, 6])
    result = decouple_rectifiers(imported)
    assert not result.rewritten
    assert [u.op_type for u in result.untouched] == ["ReduceMax", "Clip"]


# --- ScatterND ---------------------------------------------------------------------------

ROWS = np.array([[1], [3], [1]], I64)  # repeated row: reductions combine both writes
CELLS = np.array([[0, 1], [2, 2], [-1, 0]], I64)  # negative index: [-1, 0] is [3, 0]


def _scatter(make_model, reduction: str, indices: np.ndarray, opset: int):
    """``ScatterND(Relu(x), indices, 2 * x[:, rows])`` on ``x [N, 4, 3]``, with the batch
    moved off the indexed axes (``[4, N, 3]`` for one index, ``[4, 3, N]`` for two)."""
    attrs = {} if reduction == "none" else {"reduction": reduction}
    depth = indices.shape[1]
    perm, back = ([1, 0, 2], [1, 0, 2]) if depth == 1 else ([1, 2, 0], [2, 0, 1])
    take = np.arange(len(indices), dtype=I64) if depth == 1 else np.array([0], I64)
    nodes = [
        helper.make_node("Relu", ["x"], ["relu"], name="relu"),
        helper.make_node("Transpose", ["relu"], ["data"], name="to_data", perm=perm),
        helper.make_node("Gather", ["x", "take"], ["picked"], name="gather", axis=1),
        helper.make_node("Mul", ["picked", "two"], ["scaled"], name="scale"),
    ]
    if depth == 1:  # updates [3, N, 3]
        nodes.append(helper.make_node("Transpose", ["scaled"], ["updates"], perm=[1, 0, 2]))
    else:  # updates [3, N]: one scalar per index pair
        nodes.append(helper.make_node("Reshape", ["scaled", "rows"], ["flat"], name="flat"))
        nodes.append(helper.make_node("Transpose", ["flat"], ["updates"], perm=[1, 0]))
    nodes += [
        helper.make_node("ScatterND", ["data", "idx", "updates"], ["s"], name="sc", **attrs),
        helper.make_node("Transpose", ["s"], ["y"], name="back", perm=back),
    ]
    inits = {"idx": indices, "take": take, "two": np.array(2.0, F32)}
    inits["rows"] = np.array([0, -1], I64)
    return make_model(nodes, [("x", ["N", 4, 3])], ["y"], inits, opset)


SCATTER_CASES = [(r, 16) for r in ("none", "add", "mul")] + [(r, 18) for r in REDUCTIONS]


@pytest.mark.parametrize(("reduction", "opset"), SCATTER_CASES)
def test_scatternd_matches_onnxruntime(make_model, reduction, opset):
    for indices in (ROWS if reduction != "none" else ROWS[:2], CELLS):
        imported = import_onnx(_scatter(make_model, reduction, indices, opset))
        result = check_parity(imported, samples=4)
        assert result.passed, (reduction, indices.tolist(), result.summary())


def test_scatternd_opset11_one_node(make_model):
    """Indices into row 0 of the batch: a batch mixes rows, so rows run one at a time."""
    nodes = [helper.make_node("ScatterND", ["x", "idx", "upd"], ["y"], name="scatter")]
    inits = {"idx": np.array([[0, 2], [0, 0]], I64), "upd": np.array([7.0, 8.0], F32)}
    imported = import_onnx(make_model(nodes, [("x", ["N", 3])], ["y"], inits, 11))
    assert imported.batch.mode == "rowwise"
    assert check_parity(imported, samples=3).passed
    (y,) = imported.run(torch.zeros(2, 3))
    np.testing.assert_array_equal(y.numpy(), [[8.0, 0.0, 7.0]] * 2)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_scatternd_gradient_float64(reduction):
    module = OnnxScatterNDReduce(reduction)
    generator = torch.Generator().manual_seed(0)
    data = torch.rand(4, 3, 2, dtype=torch.float64, generator=generator) + 0.5
    updates = torch.rand(3, 3, 2, dtype=torch.float64, generator=generator) + 0.5
    indices = torch.tensor(ROWS if reduction != "none" else [[1], [3], [0]])
    if reduction in ("max", "min"):  # keep the winners apart so the derivative exists
        updates = updates + torch.tensor([2.0, -2.0, 0.25], dtype=torch.float64).view(3, 1, 1)
    data.requires_grad_(True)
    updates.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda d, u: module(d, indices, u), (data, updates))


def test_scatternd_graph_gradient_float64(make_model):
    for reduction, indices in (("add", ROWS), ("none", CELLS)):
        _gradcheck(import_onnx(_scatter(make_model, reduction, indices, 16)), [2, 4, 3])


# --- ScatterElements, OneHot (paddle2onnx decoder loops) ----------------------------------


@pytest.mark.parametrize(("reduction", "opset"), SCATTER_CASES)
def test_scatter_elements_matches_onnxruntime(make_model, reduction, opset):
    """``ScatterElements(Relu(x), idx, 2x)`` along axis 1 of ``x [N, 5]`` (index -1 = 4)."""
    attrs = {"axis": 1} if reduction == "none" else {"axis": 1, "reduction": reduction}
    indices = np.array([[3, 0, -1, 1, 2]] if reduction == "none" else [[1, 1, -1, 0, 1]], I64)
    nodes = [
        helper.make_node("Relu", ["x"], ["data"], name="relu"),
        helper.make_node("Mul", ["x", "two"], ["upd"], name="upd"),
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Expand", ["idx", "shape"], ["index"], name="rows"),
        helper.make_node("ScatterElements", ["data", "index", "upd"], ["y"], **attrs),
    ]
    inits = {"idx": indices, "two": np.array(2.0, F32)}
    imported = import_onnx(make_model(nodes, [("x", ["N", 5])], ["y"], inits, opset))
    assert imported.batch.mode == "dynamic"
    result = check_parity(imported, samples=3)
    assert result.passed, (reduction, result.summary())
    if reduction in ("none", "add"):
        _gradcheck(imported, [2, 5])


def test_onehot_of_an_argmax_matches_onnxruntime(make_model):
    nodes = [
        helper.make_node("ArgMax", ["x"], ["best"], name="argmax", axis=1, keepdims=0),
        helper.make_node("OneHot", ["best", "depth", "values"], ["hot"], name="onehot"),
        helper.make_node("Mul", ["hot", "x"], ["y"], name="pick"),
    ]
    inits = {"depth": np.array(6, I64), "values": np.array([-0.5, 2.0], F32)}
    imported = import_onnx(make_model(nodes, [("x", ["N", 6])], ["y"], inits, 11))
    assert check_parity(imported, samples=3).passed
    (y,) = imported.run(torch.tensor([[0.1, 0.9, 0.2, 0.0, -1.0, 0.3]]))
    np.testing.assert_allclose(y.numpy(), [[-0.05, 1.8, -0.1, 0.0, 0.5, -0.15]], rtol=1e-6)
    nodes[1] = helper.make_node("OneHot", ["best", "depth", "values"], ["hot"], axis=0)
    nodes[2] = helper.make_node("Transpose", ["hot"], ["y"], name="back", perm=[1, 0])
    imported = import_onnx(make_model(nodes, [("x", ["N", 6])], ["y"], inits, 11))
    assert check_parity(imported, samples=3).passed
