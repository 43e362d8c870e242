"""The rectifiers' fast paths give exactly what the original per-row computation gives.

A :class:`~onnx_am.passes.rectifier.SlopeLayout` picks a fast path when every row is decoupled
(no graph through the original op, a fused backward kernel) or every row is proxy (one
``leaky_relu``, no redirect); mixed rows take the general path, which avoids ``torch.where``
on full-size tensors. The reference is the original NaN-sentinel computation, kept here
verbatim (:func:`original_forward`): the original op, a ``where``-based gradient redirect
for every row with a backward slope, and the per-row proxy ``where``. The general path is
also forced on slopes that have a fast path. Everything runs in float32, the dtype of the
engine, and is compared with ``torch.equal``.
"""

from __future__ import annotations

import pytest
import torch
from test_decoupled_gradients import N_IN, N_OUT, make_mlp
from test_engine_models import one_thread, tiny_cnn  # noqa: F401  (fixture)

from onnx_am import import_onnx
from onnx_am.engine.maximizer import AMConfig, maximize
from onnx_am.errors import PassError
from onnx_am.methods import STANDARD, GradientMethod, parse_method
from onnx_am.passes import DecoupledRectifier, decouple_rectifiers
from onnx_am.passes.rectifier import SlopeLayout, _channel_shape, _common_value

pytestmark = pytest.mark.usefixtures("one_thread")

OPS = ["relu", "leaky", "prelu", "clip6", "clipm", "clipmin", "max"]
BATCH = 6


class _OriginalRedirect(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, x, slope, upper, decouple_upper):
        ctx.save_for_backward(x, slope)
        ctx.upper, ctx.decouple_upper = upper, decouple_upper
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):
        x, slope = ctx.saved_tensors
        keep = (~torch.isnan(slope)).to(grad.dtype)
        beta = torch.nan_to_num(slope, nan=0.0)
        local = torch.where(x > 0, keep, beta)
        if ctx.upper is not None:
            top = beta if ctx.decouple_upper else torch.zeros_like(beta)
            local = torch.where(x >= ctx.upper, top, local)
        grad_x = grad * local
        if grad_x.shape != x.shape:
            grad_x = grad_x.sum_to_size(x.shape)
        return grad * (1 - keep), grad_x, None, None, None


def _original_rows(module, slope, x):
    slope = slope.to(dtype=x.dtype, device=x.device)
    if slope.dim() == 1:
        return slope.view(-1, *([1] * (x.dim() - 1)))
    return slope.view(-1, *_channel_shape(tuple(slope.shape[1:]), x.dim(), module.node))


def original_forward(self, *inputs):
    """``DecoupledRectifier.forward`` before the fast paths, as the reference."""
    y = self.true_forward(*inputs)
    if self.forward_slope is None and self.backward_slope is None:
        return y
    x = self.rectified_input(*inputs)
    if self.backward_slope is not None:
        slope = _original_rows(self, self.backward_slope, x)
        y = _OriginalRedirect.apply(y, x, slope, self.upper, self.decouple_upper)
    if self.forward_slope is not None:
        slope = _original_rows(self, self.forward_slope, x)
        beta = torch.nan_to_num(slope, nan=0.0)
        proxy = torch.where(x > 0, x, beta * x)
        if self.upper is not None:
            top = beta if self.decouple_upper else torch.zeros_like(beta)
            proxy = torch.where(x < self.upper, proxy, self.upper + top * (x - self.upper))
        y = torch.where(torch.isnan(slope), y, proxy)
    return y


def _forced_mixed(scalar: bool):
    """``SlopeLayout.__init__`` that always takes the general path with both slope tensors."""

    def init(self, node, forward, backward):
        self.node, self._cache = node, {}
        self.rows = (forward if forward is not None else backward).shape[0]
        self.path, self.forward, self.backward = "mixed", forward, backward
        self.backward_scalar = None
        if scalar and backward is not None:
            self.backward_scalar = _common_value(backward)

    return init


def _read_from_tensors(cls, node, forward, backward, keys, layout):
    return cls(node, forward, backward)


@pytest.fixture
def reference(monkeypatch):
    """``reference(mode)``: from now on in the test, modules and plans built afterwards run
    the ``"original"`` code, or the general path (``"mixed"``, ``"mixed-where-free"``)."""

    def switch(mode):
        monkeypatch.undo()
        if mode == "original":
            monkeypatch.setattr(DecoupledRectifier, "forward", original_forward)
        elif mode in ("mixed", "mixed-where-free"):
            monkeypatch.setattr(SlopeLayout, "__init__", _forced_mixed(mode == "mixed"))
            # The control's per-method plans go through the forced __init__ too.
            monkeypatch.setattr(SlopeLayout, "of_methods", classmethod(_read_from_tensors))

    return switch


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
REFERENCES = ("original", "mixed", "mixed-where-free")


def run_with(reference, mode, imported, methods, x, c, **kwargs):
    """Value and gradient with a fresh rewrite whose modules run ``mode``."""
    reference(mode)
    result = decouple_rectifiers(imported, **kwargs)
    result.control.set_rows(methods)
    out = value_and_grad(imported.extractor(["y"], module=result.module), x, c)
    if mode != "original":
        assert paths(result) == {"mixed"}
    reference(None)
    return out


@pytest.mark.parametrize(("op", "case", "decouple_upper"), FAST)
def test_fast_path_equals_the_original_and_the_general_path(op, case, decouple_upper, reference):
    imported, result, extractor = setup(op, decouple_upper=decouple_upper)
    x, c = data(scale=5.0 if op == "clip6" else 3.0)
    methods = CASES[case]
    result.control.set_rows(methods)
    assert paths(result) == {case.split()[0]}  # the fast path really ran
    y, grad = value_and_grad(extractor, x, c)
    for mode in REFERENCES:
        y_ref, grad_ref = run_with(
            reference, mode, imported, methods, x, c, decouple_upper=decouple_upper
        )
        assert torch.equal(y, y_ref) and torch.equal(grad, grad_ref), mode
    (y_true,) = imported.extractor(["y"])(x)
    if case.startswith("decoupled"):  # forward exact: bit-identical to the original graph
        assert torch.equal(y, y_true)
    else:
        assert not torch.equal(y, y_true)
    _, grad_true = value_and_grad(imported.extractor(["y"]), x, c)
    assert not torch.equal(grad, grad_true)  # the method changed the gradient


MIXED = {
    "best": [STANDARD, parse_method("decoupled(0.3)")] * 3,
    "all kinds": [
        parse_method("decoupled(0.3)"),
        parse_method("proxy(0.3)"),
        STANDARD,
        parse_method("decoupled(0.3)"),
        STANDARD,
        parse_method("proxy(0.3)"),
    ],
    "sweep and standard": [STANDARD, *(parse_method(f"decoupled({b})") for b in (0.3, 0.6))] * 2,
    "proxy and standard": [STANDARD, parse_method("proxy(0.3)")] * 3,
}


MIXED_CASES = [(op, case, False) for op in OPS for case in MIXED]
MIXED_CASES += [(op, case, True) for op in ("clip6", "clipm") for case in MIXED]


@pytest.mark.parametrize(("op", "case", "decouple_upper"), MIXED_CASES)
def test_mixed_rows_equal_the_original_and_each_kind_alone(op, case, decouple_upper, reference):
    imported, result, extractor = setup(op, decouple_upper=decouple_upper)
    x, c = data(seed=2, scale=5.0 if op == "clip6" else 3.0)
    methods = MIXED[case]
    result.control.set_rows(methods)
    assert paths(result) == {"mixed"}
    y_mixed, grad_mixed = value_and_grad(extractor, x, c)
    y_ref, grad_ref = run_with(
        reference, "original", imported, methods, x, c, decouple_upper=decouple_upper
    )
    assert torch.equal(y_mixed, y_ref) and torch.equal(grad_mixed, grad_ref)
    for method in {id(m): m for m in methods}.values():
        result.control.set_rows([method] * BATCH)
        y, grad = value_and_grad(extractor, x, c)
        rows = [i for i, m in enumerate(methods) if m is method]
        assert torch.equal(y_mixed[rows], y[rows]), method.label
        assert torch.equal(grad_mixed[rows], grad[rows]), method.label


def test_scalar_slope_is_rounded_to_the_input_dtype(reference):
    """bfloat16: ``g * beta`` with a float beta must equal ``g * bfloat16(beta)``."""
    from onnx_am.passes.leaky_relu import DecoupledLeakyReLU

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 64, generator=generator).to(torch.bfloat16).requires_grad_(True)
    g = torch.randn(4, 64, generator=generator).to(torch.bfloat16)
    outs = {}
    for mode in (None, *REFERENCES):
        reference(mode)
        for slope in ("forward_slope", "backward_slope"):
            module = DecoupledLeakyReLU("act", "LeakyRelu", 0.01, torch.nn.LeakyReLU(0.01), 0.01)
            setattr(module, slope, torch.full((4,), 0.3, dtype=torch.float64))
            y = module(x)
            outs[mode, slope] = y.detach(), torch.autograd.grad((y * g).sum(), x)[0]
    for (mode, slope), (y, grad) in outs.items():
        assert torch.equal(y, outs[None, slope][0]), (mode, slope)
        assert torch.equal(grad, outs[None, slope][1]), (mode, slope)
    negative = x.detach() <= 0
    # an unrounded python-float product would differ: the rounding is what is tested
    grad = outs[None, "backward_slope"][1]
    assert not torch.equal(grad[negative], (g * 0.3)[negative])


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


def test_the_layout_is_keyed_by_values_so_a_list_takes_the_fast_path(monkeypatch):
    """A list, or a new tuple of equal methods, is the same row layout as the engine's tuple:
    the second call reuses the built tensors without working out any slope again."""
    from onnx_am.passes import control as control_module

    _, result, _ = setup("relu")
    control = result.control
    methods = [parse_method("decoupled(0.3)"), STANDARD] * (BATCH // 2)
    control.set_rows(list(methods))
    module = control._entries[0][1]
    tensors = (module.forward_slope, module.backward_slope)
    worked_out = []
    real = control_module._row_slope
    monkeypatch.setattr(control_module, "_row_slope", lambda *a: worked_out.append(a) or real(*a))
    for again in (list(methods), tuple(methods), [parse_method("decoupled(0.3)"), STANDARD] * 3):
        control.set_standard()
        control.set_rows(again)
        assert (module.forward_slope, module.backward_slope) == tensors
    assert worked_out == []  # every call took the fast path
    key = control_module.method_key
    assert key(parse_method("decoupled(0.3)")) == key(methods[0])
    assert key(parse_method("decoupled(0.4)")) != key(methods[0])
    annealed = parse_method("decoupled(anneal(0.3))")
    assert key(annealed) != key(methods[0])


def test_a_row_count_mismatch_still_fails_on_the_fast_paths():
    _, result, extractor = setup("relu")
    x, _ = data()
    for method in ("decoupled(0.3)", "proxy(0.3)"):
        result.control.set_rows([parse_method(method)] * (BATCH - 1))
        with pytest.raises(PassError, match=f"{BATCH - 1} row"):
            extractor(x)


@pytest.mark.parametrize("method", ["decoupled(0.3)", "proxy(0.3)", "best(0.3)"])
def test_engine_results_equal_those_of_the_original_rectifier(method, reference):
    imported = import_onnx(tiny_cnn())
    assert any(
        isinstance(m, DecoupledRectifier) for m in decouple_rectifiers(imported).module.modules()
    )
    config = AMConfig.of(steps=8, restarts=2, batch_size=4, crosscheck=False)
    targets = ["logits:0", "logits:1"]
    methods = [method, GradientMethod("proxy", 0.6)]
    fast = maximize(imported, targets, methods, config)
    reference("original")
    original = maximize(imported, targets, methods, config)
    for a, b in zip(fast.results, original.results, strict=True):
        assert (a.method, a.activation, a.trace) == (b.method, b.activation, b.trace)
        assert (a.image == b.image).all()


def test_proxy_rows_whose_slopes_are_the_originals_skip_the_second_forward(monkeypatch):
    """A proxy whose slopes are the originals (0 for the Relu, 0.01 for the LeakyRelu) is the
    original network: its gradient forward gives the true value."""
    from onnx_am.engine import loop

    imported = import_onnx(tiny_cnn())
    config = AMConfig.of(steps=4, restarts=2, batch_size=4, crosscheck=False)
    standard = maximize(imported, ["logits:0", "logits:1"], ["standard"], config)
    calls = []
    original = loop._true_values
    monkeypatch.setattr(loop, "_true_values", lambda *a: calls.append(1) or original(*a))
    same_slopes = GradientMethod("proxy", 0.0, per_op={"LeakyRelu": 0.01})
    same = maximize(imported, ["logits:0", "logits:1"], [same_slopes], config)
    assert len(calls) == 1  # only the value after the last step
    for a, b in zip(standard.results, same.results, strict=True):
        assert (a.activation, a.trace) == (b.activation, b.trace)
    calls.clear()
    maximize(imported, ["logits:0", "logits:1"], ["proxy(0.3)"], config)
    assert len(calls) == config.ascent.steps + 1


def test_engine_batches_are_grouped_by_method_into_spans(monkeypatch):
    """best's standard and decoupled rows come as two spans, whatever the row layout."""
    from onnx_am.passes import spans as spans_module

    seen = set()
    original = spans_module.SpansGradient.forward

    def spy(ctx, x, module, plan):
        seen.add(tuple(span.kind for span in plan.spans))
        return original(ctx, x, module, plan)

    monkeypatch.setattr(spans_module.SpansGradient, "forward", staticmethod(spy))
    imported = import_onnx(tiny_cnn())
    config = AMConfig.of(steps=2, restarts=2, batch_size=8, crosscheck=False)
    maximize(imported, ["logits:0", "logits:1"], ["best(0.3)"], config)
    assert seen == {("alpha", "decoupled")}


def _same_slope(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return a is b
    return a == b


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("case", [*CASES, *MIXED, "annealed", "annealed best"])
def test_plans_worked_out_per_method_equal_those_read_from_the_tensors(op, case):
    """SlopeControl hands each module a plan built per method (SlopeLayout.of_methods); it is
    the plan the module would read from its slope tensors, at every step of a schedule."""
    _, result, _ = setup(op)
    annealed = parse_method("decoupled(anneal(0.3))")
    methods = {
        **CASES,
        **MIXED,
        "annealed": [annealed] * BATCH,
        "annealed best": [STANDARD, annealed] * (BATCH // 2),
    }[case]
    for step in (0, 2, 4):
        result.control.set_rows(methods, step=step, total_steps=5)
        for _, module in result.control._entries:
            given = module.plan()
            if given is None:
                continue
            read = SlopeLayout(module.node, module.forward_slope, module.backward_slope)
            assert (given.path, given.rows, given.spans) == (read.path, read.rows, read.spans)
            assert given.backward_scalar == read.backward_scalar
            assert _same_slope(given.forward, read.forward)
            assert _same_slope(given.backward, read.backward)
