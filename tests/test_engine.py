"""The AM engine on tiny models whose answers are known."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from test_engine_models import (
    convex_relu_net,
    corner_maximum,
    one_thread,  # noqa: F401  (fixture)
    tiny_cnn,
)

from onnx_am import import_onnx
from onnx_am.engine.maximizer import AMConfig, expand_methods, maximize, steps_to_95
from onnx_am.errors import MethodError, SettingsError
from onnx_am.importer.batching import BatchSupport
from onnx_am.methods import GradientMethod
from onnx_am.passes import DecoupledRectifier, decouple_rectifiers

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=[0, 1, 2])
def convex(request):
    model, w, b, v = convex_relu_net(seed=request.param)
    return import_onnx(model), corner_maximum(w, b, v), (w, b, v)


@pytest.fixture(scope="module")
def cnn():
    return import_onnx(tiny_cnn())


def _f(x: np.ndarray, w, b, v) -> float:
    return float(np.maximum(x.astype(np.float64) @ w + b, 0) @ v)


def test_dead_start_standard_stays_zero_decoupled_and_proxy_reach_the_maximum(convex):
    imported, maximum, _ = convex
    methods = ["standard", "decoupled(0.3)", "proxy(0.3)", "best(0.3)"]
    report = maximize(imported, ["y:0"], methods, AMConfig.of(steps=100, lr=0.05, start="lower"))
    by_method = {r.method: r for r in report.results}
    assert by_method["standard"].activation == 0.0
    assert by_method["standard"].trace == [0.0] * 101
    assert not by_method["standard"].beats_trivial
    for label in ("decoupled(0.3)", "proxy(0.3)", "best(0.3)"):
        result = by_method[label]
        assert result.activation >= 0.99 * maximum, label
        assert result.gain_over_standard == pytest.approx(result.activation)
        assert result.beats_trivial and result.agrees
        assert result.steps_to_95 is not None and result.steps_to_95 < 100
    assert by_method["best(0.3)"].method_kind == "best"
    assert all(r.agrees for r in report.results)


def test_reported_value_is_the_true_forward_of_the_image(convex):
    imported, _, (w, b, v) = convex
    report = maximize(imported, ["y:0"], ["proxy(0.5)"], AMConfig.of(steps=30, start="lower"))
    result = report.results[0]
    assert result.activation == pytest.approx(_f(result.image, w, b, v), rel=1e-5)
    assert result.activation_onnxruntime == pytest.approx(result.activation, rel=1e-5)


def test_dead_start_finds_an_input_with_no_active_unit(convex):
    imported, _, (w, b, _v) = convex
    report = maximize(imported, ["y:0"], ["standard"], AMConfig.of(steps=5, start="dead"))
    image = report.results[0].image
    assert (image @ w + b <= 0).all()
    assert report.results[0].activation == 0.0


def test_baselines_are_the_trivial_inputs(convex):
    imported, _, (w, b, v) = convex
    report = maximize(imported, ["y:0"], ["standard"], AMConfig.of(steps=1, crosscheck=False))
    activations = report.baselines[0].activations
    d = w.shape[0]
    assert activations["upper"] == pytest.approx(_f(np.ones(d), w, b, v), rel=1e-5)
    assert activations["lower"] == pytest.approx(_f(-np.ones(d), w, b, v), abs=1e-6)
    assert activations["mid"] == pytest.approx(_f(np.zeros(d), w, b, v), rel=1e-5, abs=1e-6)
    assert set(activations) == {"upper", "lower", "mid", "random_corners"}


def _run(imported, **settings):
    config = AMConfig.of(steps=12, lr=0.1, restarts=2, **settings)
    targets = ["logits:0-2", "conv2:1@center", "act2:3"]
    return maximize(imported, targets, ["standard", "decoupled(0.3)", "proxy(0.5)", "best"], config)


def test_batched_equals_one_by_one(cnn):
    together, apart = _run(cnn, batch_size=64), _run(cnn, batch_size=1)
    assert len(together.results) == 5 * 4
    for a, b in zip(together.results, apart.results, strict=True):
        assert (a.target, a.method) == (b.target, b.method)
        assert a.activation == pytest.approx(b.activation, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(a.trace, b.trace, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.image, b.image, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_rowwise_models_run_one_row_at_a_time(cnn):
    rowwise = dataclasses.replace(import_onnx(tiny_cnn()), batch=BatchSupport("rowwise", "test"))
    a, b = _run(cnn), _run(rowwise)
    np.testing.assert_allclose(
        [r.activation for r in a.results], [r.activation for r in b.results], rtol=1e-5, atol=1e-6
    )


def test_same_seed_same_numbers_other_seed_other_numbers(cnn):
    first, second, other = _run(cnn, seed=3), _run(cnn, seed=3), _run(cnn, seed=4)
    assert [r.trace for r in first.results] == [r.trace for r in second.results]
    assert all(
        np.array_equal(a.image, b.image) for a, b in zip(first.results, second.results, strict=True)
    )
    assert [r.activation for r in first.results] != [r.activation for r in other.results]


def test_best_is_the_better_of_standard_and_decoupled_each_run_on_its_own(cnn):
    """best(0.3) alone equals, per unit, the higher of standard and decoupled(0.3) run in
    separate calls (starts are seeded per target and restart, so all start alike)."""
    config = AMConfig.of(steps=12, lr=0.1, restarts=2)
    targets = ["logits:0-2", "conv2:1@center", "act2:3"]

    def alone(method: str) -> dict[str, float]:
        return {r.target: r.activation for r in maximize(cnn, targets, [method], config).results}

    standard, decoupled = alone("standard"), alone("decoupled(0.3)")
    best = alone("best(0.3)")
    assert set(best) == set(standard) == set(decoupled) and len(best) == 5
    for target, value in best.items():
        expected = max(standard[target], decoupled[target])
        assert value == pytest.approx(expected, rel=1e-5, abs=1e-6), target
    # in one call with standard, gain_over_standard is best minus that standard row
    together = maximize(cnn, targets, ["standard", "best(0.3)"], config).results
    by_key = {(r.target, r.method): r for r in together}
    for target in best:
        row, base = by_key[(target, "best(0.3)")], by_key[(target, "standard")]
        assert row.gain_over_standard == pytest.approx(row.activation - base.activation)


def _slopes_standard(rewrite) -> bool:
    modules = [m for m in rewrite.module.modules() if isinstance(m, DecoupledRectifier)]
    return bool(modules) and all(
        m.forward_slope is None and m.backward_slope is None for m in modules
    )


def test_slopes_restored_when_the_loop_raises(cnn):
    rewrite = decouple_rectifiers(cnn)
    calls = []

    def progress(done, total, info):
        calls.append(done)
        # mid-run, the proxy rows' forward slopes are set ...
        if done == 3:
            rewrite.control.set_rows([expand_methods("proxy(0.5)")[0].runs[0]] * 2, 0, 1)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        maximize(
            cnn,
            ["logits:0"],
            ["proxy(0.5)"],
            AMConfig.of(steps=10),
            rewrite=rewrite,
            progress=progress,
        )
    assert calls == [1, 2, 3]
    assert _slopes_standard(rewrite)
    x = torch.rand((2, *cnn.input.sample_shape), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(cnn.run(x, module=rewrite.module)[0], cnn.run(x)[0], rtol=0, atol=0)


def test_progress_counts_every_step_of_every_chunk(cnn):
    seen = []

    def progress(done, total, info):
        seen.append((done, total, info["batch"]))

    config = AMConfig.of(steps=4, batch_size=4)
    maximize(cnn, ["logits:0-2"], ["standard", "decoupled(0.2)"], config, progress=progress)
    assert seen == [(i + 1, 8, i // 4) for i in range(8)]


def test_nhwc_model_with_per_channel_normalisation_matches_nchw_twin():
    settings = {"steps": 15, "lr": 8.0, "start": "mid", "domain": _imagenet_like()}
    nchw = maximize(
        import_onnx(tiny_cnn()), ["logits:0-2"], ["decoupled(0.3)"], AMConfig.of(**settings)
    )
    imported = import_onnx(tiny_cnn(nhwc=True))
    assert imported.input.layout == "NHWC"
    nhwc = maximize(imported, ["logits:0-2"], ["decoupled(0.3)"], AMConfig.of(**settings))
    for a, b in zip(nchw.results, nhwc.results, strict=True):
        assert b.image.shape == (6, 6, 3)
        assert b.agrees and a.agrees
        assert 0.0 <= b.image.min() and b.image.max() <= 255.0
        assert b.activation == pytest.approx(a.activation, rel=1e-4)
        np.testing.assert_allclose(b.image, a.image.transpose(1, 2, 0), rtol=1e-4, atol=1e-3)


def _imagenet_like():
    from onnx_am.domain import parse_domain

    return parse_domain("0..255", mean="124,116,104", std="58,57,20")


def test_adam_and_regularizers_still_report_true_values(cnn):
    regularizers = ("jitter(1)", "blur(0.2)", "l2(0.01)", "tv(0.05)")
    config = AMConfig.of(steps=15, optimizer="adam", lr=0.05, regularizers=regularizers)
    report = maximize(cnn, ["logits:0-2", "act2:1@2,2"], ["standard", "decoupled(0.3)"], config)
    for result in report.results:
        assert result.agrees
        assert result.activation >= result.trace[0]
        assert result.activation > result.trace[0] or result.method == "standard"
    assert report.settings["regularizers"] == list(regularizers)


def test_sweeps_and_schedules_expand():
    labels = [
        plan.label
        for plan in expand_methods(["decoupled(0.1,0.3,1)", "proxy(anneal(1.0))", "best"])
    ]
    assert labels == [
        "decoupled(0.1)",
        "decoupled(0.3)",
        "decoupled(1)",
        "proxy(anneal(1->alpha))",
        "best(0.3)",
    ]
    with pytest.raises(MethodError, match="'decoupled\\(x\\)'"):
        expand_methods(["decoupled(x)"])
    with pytest.raises(MethodError, match="'best\\(y\\)'"):
        expand_methods(["best(y)"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"steps": 0}, "steps must be >= 1, got 0"),
        ({"optimizer": "sgd"}, "unknown optimizer 'sgd'"),
        ({"start": "zeros"}, "unknown start 'zeros'"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"regularizers": ("smooth(1)",)}, "unknown regularizer 'smooth\\(1\\)'"),
    ],
)
def test_bad_settings_raise_our_errors(cnn, settings, message):
    with pytest.raises(SettingsError, match=message):
        maximize(cnn, ["logits:0"], ["standard"], AMConfig.of(**settings))


def test_steps_to_95():
    assert steps_to_95([0.0, 5.0, 9.6, 10.0], 10.0) == 2
    assert steps_to_95([-9.0, -5.0, -4.1, -4.0], -4.0) == 2
    assert steps_to_95([0.0, 1.0], 2.0) is None
    # a run that never left its start value has no convergence step (not 0)
    assert steps_to_95([3.0, 3.0, 3.0], 3.0) is None
    assert steps_to_95([], 1.0) is None


def test_method_objects_overrides_schedules_and_a_json_report(convex):
    imported, maximum, _ = convex
    methods = [
        GradientMethod("decoupled", 0.3),
        GradientMethod("decoupled", 0.3, per_op={"Relu": 1.0}),
        "decoupled(anneal(1.0))",
        "proxy(cosine(1.0,0.1))",
    ]
    report = maximize(imported, ["y:0"], methods, AMConfig.of(steps=100, start="lower"))
    assert [r.method for r in report.results] == [
        "decoupled(0.3)",
        "decoupled(0.3)[Relu=1]",
        "decoupled(anneal(1->alpha))",
        "proxy(cosine(1->0.1))",
    ]
    assert all(r.activation >= 0.99 * maximum for r in report.results)
    assert [r.backward_slope for r in report.results] == [0.3, 0.3, None, None]
    data = json.loads(json.dumps(report.to_dict()))
    assert data["settings"]["methods"][1] == "decoupled(0.3)[Relu=1]"
    assert len(data["results"][0]["trace"]) == 101
