"""The rectifiers' fast paths give exactly what the general per-row path gives.

A :class:`~onnx_am.passes.rectifier.SlopePlan` picks a fast path when every row is decoupled
(no graph through the original op) or every row is proxy (one ``leaky_relu``, no redirect).
The reference is the general path forced on the same slopes: the original op, the gradient
redirect for every row with a backward slope, and the per-row proxy ``where``; i.e. the
NaN-sentinel computation the fast paths replace. Everything runs in float32, the dtype of
the engine, and is compared with ``torch.equal``.
"""

from __future__ import annotations

import pytest
import torch
from test_decoupled_gradients import N_IN, N_OUT, make_mlp
from test_engine_models import one_thread, tiny_cnn  # noqa: F401  (fixture)

from onnx_am import import_onnx
from onnx_am.engine import AMConfig, maximize
from onnx_am.errors import PassError
from onnx_am.methods import STANDARD, GradientMethod, parse_method
from onnx_am.passes import DecoupledRectifier, decouple_rectifiers
from onnx_am.passes.rectifier import SlopePlan

pytestmark = pytest.mark.usefixtures("one_thread")

OPS = ["relu", "leaky", "prelu", "clip6", "clipm", "clipmin", "max"]
BATCH = 6


def _general(self, node, forward, backward):
    """``SlopePlan.__init__`` that always takes the general path with both slope tensors."""
    self.node, self.rows, self._cache = (
        node,
        (forward if forward is not None else backward).shape[0],
        {},
    )
    self.path, self.forward, self.backward = "mixed", forward, backward


@pytest.fixture
def general_path(monkeypatch):
    """Within the test, every plan built afterwards uses the general per-row path."""
    return lambda: monkeypatch.setattr(SlopePlan, "__init__", _general)


def setup(op, **kwargs):
    model, _ = make_mlp(op)
    imported = import_onnx(model)
    result = decouple_rectifiers(imported, **kwargs)
    return imported, result, imported.extractor(["y"], module=result.module)


def data(seed=1, scale=3.0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, N_IN, generator=generator) * scale
    c = torch.randn(BATCH, N_OUT, generator=generator)
    return x, c


def value_and_grad(extractor, x, c):
    x = x.clone().requires_grad_(True)
    (y,) = extractor(x)
    (grad,) = torch.autograd.grad((y * c).sum(), x)
    return y.detach(), grad


def paths(result) -> set[str]:
    return {module.plan().path for _, module in result.control._entries}


CASES = {
    "decoupled": [parse_method("decoupled(0.3)")] * BATCH,
    "proxy": [parse_method("proxy(0.3)")] * BATCH,
    "decoupled sweep": [parse_method(f"decoupled({b})") for b in (0.3, 0.6, 1.0)] * 2,
    "proxy sweep": [parse_method(f"proxy({b})") for b in (0.3, 0.6, 1.0)] * 2,
}


FAST = [(op, case, False) for op in OPS for case in CASES]
FAST += [(op, case, True) for op in ("clip6", "clipm") for case in CASES]


@pytest.mark.parametrize(("op", "case", "decouple_upper"), FAST)
def test_fast_path_equals_general_path(op, case, decouple_upper, general_path):
    imported, result, extractor = setup(op, decouple_upper=decouple_upper)
    x, c = data(scale=5.0 if op == "clip6" else 3.0)
    methods = CASES[case]
    result.control.set_rows(methods)
    assert paths(result) == {case.split()[0]}  # the fast path really ran
    y, grad = value_and_grad(extractor, x, c)
    general_path()
    again = decouple_rectifiers(imported, decouple_upper=decouple_upper)
    again.control.set_rows(methods)
    assert paths(again) == {"mixed"}
    y_ref, grad_ref = value_and_grad(imported.extractor(["y"], module=again.module), x, c)
    assert torch.equal(y, y_ref) and torch.equal(grad, grad_ref)
    (y_true,) = imported.extractor(["y"])(x)
    if case.startswith("decoupled"):  # forward exact: bit-identical to the original graph
        assert torch.equal(y, y_true)
    else:
        assert not torch.equal(y, y_true)
    _, grad_true = value_and_grad(imported.extractor(["y"]), x, c)
    assert not torch.equal(grad, grad_true)  # the method changed the gradient


@pytest.mark.parametrize("op", OPS)
def test_mixed_rows_equal_the_fast_path_rows(op):
    _, result, extractor = setup(op)
    x, c = data(seed=2)
    decoupled, proxy = parse_method("decoupled(0.3)"), parse_method("proxy(0.3)")
    mixed = [decoupled, proxy, STANDARD, decoupled, STANDARD, proxy]
    result.control.set_rows(mixed)
    assert paths(result) == {"mixed"}
    y_mixed, grad_mixed = value_and_grad(extractor, x, c)
    for method in (decoupled, proxy, STANDARD):
        result.control.set_rows([method] * BATCH)
        y, grad = value_and_grad(extractor, x, c)
        rows = [i for i, m in enumerate(mixed) if m is method]
        assert torch.equal(y_mixed[rows], y[rows]), method.label
        assert torch.equal(grad_mixed[rows], grad[rows]), method.label


def test_scalar_slope_is_rounded_to_the_input_dtype(general_path):
    """bfloat16: ``g * beta`` with a float beta must equal ``g * bfloat16(beta)``."""
    from onnx_am.passes.leaky_relu import DecoupledLeakyReLU

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 64, generator=generator).to(torch.bfloat16).requires_grad_(True)
    g = torch.randn(4, 64, generator=generator).to(torch.bfloat16)
    outs = []
    for fast in (True, False):
        if not fast:
            general_path()
        for slope in ("forward_slope", "backward_slope"):
            module = DecoupledLeakyReLU("act", "LeakyRelu", 0.01, torch.nn.LeakyReLU(0.01), 0.01)
            setattr(module, slope, torch.full((4,), 0.3, dtype=torch.float64))
            y = module(x)
            outs.append((y.detach(), torch.autograd.grad((y * g).sum(), x)[0]))
    for (y_fast, g_fast), (y_ref, g_ref) in zip(outs[:2], outs[2:], strict=True):
        assert torch.equal(y_fast, y_ref) and torch.equal(g_fast, g_ref)
    negative = x.detach() <= 0
    # an unrounded python-float product would differ: the rounding is what is tested
    assert not torch.equal(g_fast[negative], (g * 0.3)[negative])


def test_fixed_beta_keeps_tensors_and_plans_a_schedule_rebuilds_them():
    _, result, extractor = setup("relu")
    fixed = parse_method("decoupled(0.3)")
    module = result.control._entries[0][1]
    result.control.set_rows([fixed] * BATCH, step=0, total_steps=5)
    tensor, plan = module.backward_slope, module.plan()
    for step in (1, 4):
        result.control.set_standard()
        assert module.plan() is None
        result.control.set_rows([fixed] * BATCH, step=step, total_steps=5)
        assert module.backward_slope is tensor and module.plan() is plan
    # equal methods that are other objects still give the same values, so the same tensors
    result.control.set_rows([parse_method("decoupled(0.3)") for _ in range(BATCH)])
    assert module.backward_slope is tensor
    annealed = parse_method("decoupled(anneal(1.0,0.5))")
    seen = []
    for step in range(3):
        result.control.set_rows([annealed] * BATCH, step=step, total_steps=3)
        seen.append(module.backward_slope)
        assert float(seen[-1][0]) == pytest.approx(1.0 - 0.25 * step)
    assert len({id(t) for t in seen}) == 3
    result.control.set_rows([fixed] * (BATCH - 1) + [STANDARD])  # another layout: rebuilt
    assert module.backward_slope is not tensor and module.plan().path == "mixed"


def test_a_row_count_mismatch_still_fails_on_the_fast_paths():
    _, result, extractor = setup("relu")
    x, _ = data()
    for method in ("decoupled(0.3)", "proxy(0.3)"):
        result.control.set_rows([parse_method(method)] * (BATCH - 1))
        with pytest.raises(PassError, match=f"{BATCH - 1} row"):
            extractor(x)


@pytest.mark.parametrize("method", ["decoupled(0.3)", "proxy(0.3)", "best(0.3)"])
def test_engine_results_do_not_depend_on_the_path(method, general_path):
    imported = import_onnx(tiny_cnn())
    config = AMConfig(steps=8, restarts=2, batch_size=4, crosscheck=False)
    targets = ["logits:0", "logits:1"]
    methods = [method, GradientMethod("proxy", 0.6)]
    fast = maximize(imported, targets, methods, config)
    general_path()
    general = maximize(imported, targets, methods, config)
    for a, b in zip(fast.results, general.results, strict=True):
        assert (a.method, a.activation, a.trace) == (b.method, b.activation, b.trace)
        assert (a.image == b.image).all()
    modules = [m for m in decouple_rectifiers(imported).module.modules()]
    assert any(isinstance(m, DecoupledRectifier) for m in modules)
