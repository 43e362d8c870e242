"""Input gradients of decoupled rectifiers against hand-written float64 formulas.

The models are tiny MLPs ``Gemm -> R -> Gemm -> R -> Gemm`` (and one-node models) built in
memory, so each answer can be worked out by hand: with forward slope ``f`` and backward slope
``b`` on the negative side, ``h1 = W1 x + b1``, ``a1 = r_f(h1)``, ..., and the gradient of
``sum(c * y)`` is ``W1^T (s_b(h1) * W2^T (s_b(h2) * W3^T c))``, where ``s_b`` is 1 above 0,
``b`` at or below 0 (and 0, or ``b`` with ``decouple_upper``, at or above a clip's top).
``standard`` is ``f = b = alpha``; ``decoupled(beta)`` is ``f = alpha, b = beta``;
``proxy(beta)`` is ``f = b = beta``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import build_model
from onnx import helper

from onnx_am import import_onnx
from onnx_am.errors import PassError
from onnx_am.methods import STANDARD, GradientMethod, parse_method
from onnx_am.passes import decouple_rectifiers

N_IN, HIDDEN, N_OUT, BATCH = 5, 6, 3, 4
TOPS = {"clip6": 6.0, "clipm": 1.5}
F32 = float(np.float32(0.1)), float(np.float32(0.2))  # the slopes as the float32 model holds them
ALPHAS = {"relu": 0.0, "clipmin": 0.0, "clip6": 0.0, "clipm": 0.0, "leaky": F32[0], "max": F32[1]}
KINDS = {
    "leaky": "leaky_relu",
    "max": "max_leaky",
    "clip6": "clip",
    "clipm": "clip",
    "clipmin": "clip",
}
OPS = ["relu", "leaky", "prelu", "clip6", "clipm", "clipmin", "max"]


def _rectifier(op: str, layer: int, source: str, inits: dict, rng) -> list:
    out = f"a{layer}"
    if op == "relu":
        return [helper.make_node("Relu", [source], [out], name=f"act{layer}")]
    if op == "leaky":
        return [helper.make_node("LeakyRelu", [source], [out], name=f"act{layer}", alpha=0.1)]
    if op == "prelu":
        inits[f"slope{layer}"] = rng.uniform(0.05, 0.4, HIDDEN).astype(np.float32)
        return [helper.make_node("PRelu", [source, f"slope{layer}"], [out], name=f"act{layer}")]
    if op == "max":
        inits["leak"] = np.array(0.2, np.float32)
        return [
            helper.make_node("Mul", [source, "leak"], [f"m{layer}"], name=f"mul{layer}"),
            helper.make_node("Max", [source, f"m{layer}"], [out], name=f"act{layer}"),
        ]
    inits["zero"] = np.array(0.0, np.float32)
    bounds = ["zero"] if op == "clipmin" else ["zero", op]
    if op in TOPS:
        inits[op] = np.array(TOPS[op], np.float32)
    return [helper.make_node("Clip", [source, *bounds], [out], name=f"act{layer}")]


def make_mlp(op: str, seed: int = 0):
    """An MLP with two rectifier layers of kind ``op``; returns (model, float64 weights)."""
    rng = np.random.default_rng(seed)
    sizes = [(HIDDEN, N_IN), (HIDDEN, HIDDEN), (N_OUT, HIDDEN)]
    inits = {}
    for k, (rows, cols) in enumerate(sizes, 1):
        inits[f"W{k}"] = (rng.normal(size=(rows, cols)) * 1.5).astype(np.float32)
        inits[f"B{k}"] = rng.normal(size=rows).astype(np.float32)
    nodes, source = [], "x"
    for k in (1, 2):
        nodes.append(
            helper.make_node("Gemm", [source, f"W{k}", f"B{k}"], [f"h{k}"], name=f"fc{k}", transB=1)
        )
        nodes += _rectifier(op, k, f"h{k}", inits, rng)
        source = f"a{k}"
    nodes.append(helper.make_node("Gemm", [source, "W3", "B3"], ["y"], name="fc3", transB=1))
    model = build_model(nodes, [("x", ["N", N_IN])], ["y"], inits, opset=13)
    return model, {k: torch.from_numpy(v.astype(np.float64)) for k, v in inits.items()}


def alpha_of(op: str, weights: dict, layer: int):
    return weights[f"slope{layer}"] if op == "prelu" else ALPHAS[op]


def rect(h, op, slope, decouple_upper=False):
    """The rectifier with negative slope ``slope`` (per row or channel), written out."""
    out = torch.where(h > 0, h, slope * h)
    if op in TOPS:
        top = TOPS[op]
        out = torch.where(h < top, out, top + (slope if decouple_upper else 0.0) * (h - top))
    return out


def local_slope(h, op, slope, decouple_upper=False):
    s = torch.where(h > 0, torch.ones_like(h), slope * torch.ones_like(h))
    if op in TOPS:
        s = torch.where(h >= TOPS[op], (slope if decouple_upper else 0.0) * torch.ones_like(h), s)
    return s


def hand(x, c, w, op, fwd, bwd, decouple_upper=False):
    """``(y, dy/dx . c)`` by the formula; ``fwd``/``bwd``: layer -> slope (per row/channel)."""
    h1 = x @ w["W1"].T + w["B1"]
    h2 = rect(h1, op, fwd[1], decouple_upper) @ w["W2"].T + w["B2"]
    y = rect(h2, op, fwd[2], decouple_upper) @ w["W3"].T + w["B3"]
    d = (c @ w["W3"]) * local_slope(h2, op, bwd[2], decouple_upper)
    d = (d @ w["W2"]) * local_slope(h1, op, bwd[1], decouple_upper)
    return y, d @ w["W1"]


def row_slopes(op, w, methods, layer, forward):
    """Per-row slopes of one layer, shape (N, 1) or (N, HIDDEN)."""
    alpha = torch.as_tensor(alpha_of(op, w, layer), dtype=torch.float64).expand(HIDDEN)
    rows = []
    for method in methods:
        uses_beta = method.kind == "decoupled" and not forward or method.kind == "proxy"
        rows.append(torch.full((HIDDEN,), method.beta, dtype=torch.float64) if uses_beta else alpha)
    return torch.stack(rows)


def inputs(seed=1, batch=BATCH, scale=2.0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, N_IN, generator=generator, dtype=torch.float64) * scale
    c = torch.randn(batch, N_OUT, generator=generator, dtype=torch.float64)
    return x, c


def decoupled_setup(op, seed=0, **kwargs):
    model, w = make_mlp(op, seed)
    imported = import_onnx(model)
    imported.module.double()
    result = decouple_rectifiers(imported, **kwargs)
    return imported, result, imported.extractor(["y"], module=result.module), w


def run_grad(extractor, x, c):
    x = x.clone().requires_grad_(True)
    (y,) = extractor(x)
    (y * c).sum().backward()
    return y.detach(), x.grad


METHODS = {
    "standard": STANDARD,
    "decoupled": parse_method("decoupled(0.3)"),
    "proxy": parse_method("proxy(0.3)"),
}


@pytest.mark.parametrize("method_name", list(METHODS))
@pytest.mark.parametrize("op", OPS)
def test_gradient_matches_hand_formula(op, method_name):
    imported, result, extractor, w = decoupled_setup(op)
    assert [r.kind for r in result.rewritten] == [KINDS.get(op, op)] * 2
    methods = [METHODS[method_name]] * BATCH
    x, c = inputs(scale=4.0 if op == "clip6" else 2.0)
    result.control.set_rows(methods)
    y, grad = run_grad(extractor, x, c)
    fwd = {k: row_slopes(op, w, methods, k, forward=True) for k in (1, 2)}
    bwd = {k: row_slopes(op, w, methods, k, forward=False) for k in (1, 2)}
    y_ref, grad_ref = hand(x, c, w, op, fwd, bwd)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-10)
    if method_name != "standard":  # the method changed something, or the test proves nothing
        _, grad_true = hand(x, c, w, op, *[{k: alpha_of(op, w, k) for k in (1, 2)}] * 2)
        assert not torch.allclose(grad, grad_true)


@pytest.mark.parametrize("op", ["clip6", "clipm"])
def test_clip_top_decoupled_only_when_asked(op):
    _, result, extractor, w = decoupled_setup(op, decouple_upper=True)
    x, c = inputs(scale=4.0)
    h1 = x @ w["W1"].T + w["B1"]
    assert (h1 >= TOPS[op]).any() and (h1 <= 0).any()
    for name in ("decoupled", "proxy"):
        methods = [METHODS[name]] * BATCH
        result.control.set_rows(methods)
        y, grad = run_grad(extractor, x, c)
        fwd = {k: row_slopes(op, w, methods, k, forward=True) for k in (1, 2)}
        bwd = {k: row_slopes(op, w, methods, k, forward=False) for k in (1, 2)}
        y_ref, grad_ref = hand(x, c, w, op, fwd, bwd, decouple_upper=True)
        torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-10)
        torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("op", ["relu", "leaky", "max"])
def test_proxy_equals_autograd_through_leaky_copy(op):
    _, result, extractor, w = decoupled_setup(op)
    beta = 0.45
    copy = torch.nn.Sequential(
        torch.nn.Linear(N_IN, HIDDEN),
        torch.nn.LeakyReLU(beta),
        torch.nn.Linear(HIDDEN, HIDDEN),
        torch.nn.LeakyReLU(beta),
        torch.nn.Linear(HIDDEN, N_OUT),
    ).double()
    for k, layer in zip((1, 2, 3), (0, 2, 4), strict=True):
        copy[layer].weight.data, copy[layer].bias.data = w[f"W{k}"], w[f"B{k}"]
    x, c = inputs()
    x_copy = x.clone().requires_grad_(True)
    y_copy = copy(x_copy)
    (y_copy * c).sum().backward()
    result.control.set_rows([GradientMethod("proxy", beta)] * BATCH)
    y, grad = run_grad(extractor, x, c)
    torch.testing.assert_close(y, y_copy.detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(grad, x_copy.grad, rtol=0, atol=1e-10)
    result.control.set_standard()
    (y_true,) = extractor(x)
    assert not torch.allclose(y_true, y)  # the proxy forward really differs


def test_mixed_rows_equal_rows_run_alone():
    _, result, extractor, _ = decoupled_setup("prelu")
    methods = [
        STANDARD,
        parse_method("decoupled(0.3)"),
        parse_method("proxy(0.6)"),
        parse_method("decoupled(0.9)"),
    ]
    x, c = inputs()
    result.control.set_rows(methods)
    y, grad = run_grad(extractor, x, c)
    for i, method in enumerate(methods):
        result.control.set_rows([method])
        y_row, grad_row = run_grad(extractor, x[i : i + 1], c[i : i + 1])
        torch.testing.assert_close(y[i : i + 1], y_row, rtol=0, atol=1e-12)
        torch.testing.assert_close(grad[i : i + 1], grad_row, rtol=0, atol=1e-12)
    assert not torch.allclose(grad[1], grad[3])


def test_prelu_standard_rows_use_per_channel_alpha_and_beta_rows_use_beta():
    rng = np.random.default_rng(3)
    slope = rng.uniform(0.05, 0.5, (4, 1, 1)).astype(np.float32)
    node = helper.make_node("PRelu", ["x", "slope"], ["y"], name="prelu")
    model = build_model([node], [("x", ["N", 4, 3, 3])], ["y"], {"slope": slope}, opset=13)
    imported = import_onnx(model)
    imported.module.double()
    result = decouple_rectifiers(imported)
    assert result.rewritten[0].alpha == pytest.approx(slope.reshape(-1).tolist())
    extractor = imported.extractor(["y"], module=result.module)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 3, 3, generator=generator, dtype=torch.float64)
    c = torch.randn(3, 4, 3, 3, generator=generator, dtype=torch.float64)
    result.control.set_rows([STANDARD, parse_method("decoupled(0.7)"), parse_method("proxy(0.7)")])
    y, grad = run_grad(extractor, x, c)
    alpha = torch.from_numpy(slope.astype(np.float64))
    torch.testing.assert_close(grad[0], c[0] * torch.where(x[0] > 0, 1.0, alpha))
    torch.testing.assert_close(grad[1], c[1] * torch.where(x[1] > 0, 1.0, 0.7))
    torch.testing.assert_close(grad[2], c[2] * torch.where(x[2] > 0, 1.0, 0.7))
    torch.testing.assert_close(y[:2], torch.where(x[:2] > 0, x[:2], alpha * x[:2]), rtol=0, atol=0)
    torch.testing.assert_close(y[2], torch.where(x[2] > 0, x[2], 0.7 * x[2]))


def test_prelu_anneal_to_alpha_is_per_channel():
    _, result, extractor, w = decoupled_setup("prelu")
    method = parse_method("decoupled(anneal(1.0))")
    x, c = inputs()
    result.control.set_rows([method] * BATCH, step=2, total_steps=5)
    _, grad = run_grad(extractor, x, c)
    bwd = {k: w[f"slope{k}"] + (1.0 - w[f"slope{k}"]) * 0.5 for k in (1, 2)}
    _, grad_ref = hand(x, c, w, "prelu", {k: w[f"slope{k}"] for k in (1, 2)}, bwd)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-10)


def test_schedule_changes_beta_between_steps_without_rebuilding():
    _, result, extractor, w = decoupled_setup("leaky")
    method = parse_method("decoupled(anneal(1.0,0.5))")
    x, c = inputs()
    modules = dict(result.module.named_modules())
    for step, beta in [(0, 1.0), (2, 0.75), (4, 0.5)]:
        result.control.set_rows([method] * BATCH, step=step, total_steps=5)
        _, grad = run_grad(extractor, x, c)
        _, grad_ref = hand(x, c, w, "leaky", {1: F32[0], 2: F32[0]}, {1: beta, 2: beta})
        torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-10)
    assert dict(result.module.named_modules()) == modules


def test_per_node_and_per_op_overrides():
    _, result, extractor, w = decoupled_setup("relu")
    x, c = inputs()
    cases = [
        (GradientMethod("decoupled", 0.3, per_node={"act2": 0.9}), {1: 0.3, 2: 0.9}),
        (GradientMethod("decoupled", 0.3, per_op={"Relu": 0.7}), {1: 0.7, 2: 0.7}),
        (GradientMethod("decoupled", 0.3, per_op={"LeakyRelu": 0.7}), {1: 0.3, 2: 0.3}),
        (
            GradientMethod("decoupled", 0.3, per_op={"Relu": 0.7}, per_node={"act1": 0.0}),
            {1: 0.0, 2: 0.7},
        ),
    ]
    for method, bwd in cases:
        result.control.set_rows([method] * BATCH)
        _, grad = run_grad(extractor, x, c)
        _, grad_ref = hand(x, c, w, "relu", {1: 0.0, 2: 0.0}, bwd)
        torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("op", OPS)
def test_beta_equal_to_alpha_and_rewriting_twice_give_exactly_the_standard_gradient(op):
    imported, result, extractor, w = decoupled_setup(op)
    x, c = inputs(scale=4.0)
    y_true, grad_true = run_grad(imported.extractor(["y"]), x, c)
    alpha = result.rewritten[0].alpha
    same = GradientMethod("decoupled", alpha) if isinstance(alpha, float) else STANDARD
    for method in (STANDARD, same):
        result.control.set_rows([method] * BATCH)
        y, grad = run_grad(extractor, x, c)
        assert torch.equal(y, y_true) and torch.equal(grad, grad_true)
    again = decouple_rectifiers(imported, module=result.module)
    replaced = [again.module.get_submodule(n) for n in ("act1", "act2")]
    assert all(type(m).__name__.startswith("Decoupled") for m in replaced)
    assert not any(type(m.source_module).__name__.startswith("Decoupled") for m in replaced)
    twice = imported.extractor(["y"], module=again.module)
    y, grad = run_grad(twice, x, c)
    assert torch.equal(y, y_true) and torch.equal(grad, grad_true)
    again.control.set_rows([METHODS["decoupled"]] * BATCH)
    result.control.set_rows([METHODS["decoupled"]] * BATCH)
    assert torch.equal(run_grad(twice, x, c)[1], run_grad(extractor, x, c)[1])


def test_rows_context_restores_standard_and_bad_rows_fail_clearly():
    _, result, extractor, _ = decoupled_setup("relu")
    x, c = inputs()
    y_true, grad_true = run_grad(extractor, x, c)
    with result.control.rows([METHODS["proxy"]] * BATCH):
        assert not torch.allclose(run_grad(extractor, x, c)[1], grad_true)
    assert torch.equal(run_grad(extractor, x, c)[1], grad_true)
    result.control.set_rows([METHODS["decoupled"]] * 3)
    with pytest.raises(PassError, match="3 row"):
        extractor(x)
    with pytest.raises(PassError, match="nan"):
        result.control.set_rows([GradientMethod("decoupled", float("nan"))])
    with pytest.raises(PassError, match="at least one"):
        result.control.set_rows([])
    with pytest.raises(PassError, match="step 5"):
        result.control.set_rows([STANDARD], step=5, total_steps=5)
