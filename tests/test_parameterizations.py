"""Fourier / decorrelated-colour parameterizations: the mapping, and the engine and CLI with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from onnx_am_cli.main import cli
from test_engine_models import (
    convex_relu_net,
    one_thread,  # noqa: F401  (fixture)
    tiny_cnn,
)

from onnx_am import import_onnx
from onnx_am.domain import InputDomain
from onnx_am.engine.maximizer import AMConfig, maximize
from onnx_am.engine.parameterizations import (
    BOUND_MARGIN,
    FourierParameterization,
    colour_matrix,
    make_parameterization,
    spectrum_scale,
)
from onnx_am.engine.starts import make_starts
from onnx_am.errors import OnnxAmError
from onnx_am.importer.input_spec import InputSpec
from onnx_am.objectives import resolve_targets

pytestmark = pytest.mark.usefixtures("one_thread")


def _spec(layout: str, sample: tuple[int, ...]) -> InputSpec:
    return InputSpec("input", ("N", *sample), "float32", sample, layout)


def _images(shape, domain: InputDomain, seed: int = 0) -> torch.Tensor:
    """Random images well inside the box (the sigmoid never reaches a bound)."""
    generator = torch.Generator().manual_seed(seed)
    fraction = 0.02 + 0.96 * torch.rand(shape, generator=generator)
    return domain.low + (domain.high - domain.low) * fraction


@pytest.fixture(scope="module")
def cnn():
    return import_onnx(tiny_cnn())


@pytest.mark.parametrize("decorrelate", [False, True])
@pytest.mark.parametrize(
    ("layout", "sample"), [("NCHW", (3, 6, 7)), ("NHWC", (5, 8, 3)), ("NCHW", (3, 1, 4))]
)
def test_a_parameter_made_from_an_image_gives_back_that_image(layout, sample, decorrelate):
    domain = InputDomain(0.0, 255.0)
    mapping = FourierParameterization(_spec(layout, sample), domain, decorrelate)
    images = _images((4, *sample), domain)
    parameter = mapping.from_raw(images)
    height, width = mapping.image_size
    assert parameter.shape == (4, 3, height, width // 2 + 1, 2)
    assert mapping.parameter_shape(4) == tuple(parameter.shape)
    torch.testing.assert_close(mapping.to_raw(parameter), images, rtol=0, atol=1e-4)
    doubles = mapping.from_raw(images.double())
    torch.testing.assert_close(mapping.to_raw(doubles), images.double(), rtol=0, atol=1e-9)


def test_images_at_the_bounds_come_back_on_the_margin():
    domain = InputDomain(-1.0, 1.0)
    mapping = FourierParameterization(_spec("NCHW", (1, 4, 4)), domain)
    images = torch.tensor([-1.0, 1.0]).repeat_interleave(16).reshape(2, 1, 4, 4).double()
    back = mapping.to_raw(mapping.from_raw(images))
    margin = BOUND_MARGIN * (domain.high - domain.low)
    torch.testing.assert_close(back[0], torch.full((1, 4, 4), -1 + margin).double())
    torch.testing.assert_close(back[1], torch.full((1, 4, 4), 1 - margin).double())


def test_spectrum_scale_is_one_over_frequency_floored_at_the_lowest_frequency():
    scale = spectrum_scale(8, 10)
    assert scale.shape == (8, 6)
    assert float(scale.pow(2).mean()) == pytest.approx(1.0)
    # bins (0, 1): f = 1/10 = the floor, so the DC bin gets the same scale
    assert float(scale[0, 0]) == pytest.approx(float(scale[0, 1]))
    # f = 0.125 at (1, 0), f = 0.5 at (0, 5): scale ratio 4
    assert float(scale[1, 0] / scale[0, 5]) == pytest.approx(4.0)
    # f = sqrt(0.25^2 + 0.3^2) at (2, 3) against f = 0.1 at (0, 1)
    ratio = float(scale[0, 1] / scale[2, 3])
    assert ratio == pytest.approx(np.hypot(0.25, 0.3) / 0.1)
    squared = spectrum_scale(8, 10, decay_power=2.0)
    assert float(squared[1, 0] / squared[0, 5]) == pytest.approx(16.0)
    assert float(scale.max()) == float(scale[0, 0])  # nothing above the lowest frequency


def test_colour_matrix_is_invertible_and_its_first_component_is_luminance():
    matrix = colour_matrix()
    torch.testing.assert_close(matrix @ torch.linalg.inv(matrix), torch.eye(3).double())
    assert float(torch.linalg.cond(matrix)) < 20
    assert float(matrix.norm(dim=0).max()) == pytest.approx(1.0)
    domain = InputDomain(0.0, 1.0)
    mapping = FourierParameterization(_spec("NCHW", (3, 4, 4)), domain, decorrelate=True)
    parameter = torch.zeros(mapping.parameter_shape(1))
    parameter[0, 0, 0, 0, 0] = 3.0  # a positive DC value of the first component only
    image = mapping.to_raw(parameter)[0]
    assert (image > 0.5).all()  # every colour channel brighter: grey, not one colour


@pytest.mark.parametrize("name", ["fourier", "fourier+decorrelated"])
def test_any_parameter_makes_an_image_inside_the_box(name):
    domain = InputDomain(-2.0, 3.0)
    mapping = make_parameterization(name, _spec("NHWC", (6, 6, 3)), domain)
    generator = torch.Generator().manual_seed(1)
    parameter = torch.randn(mapping.parameter_shape(8), generator=generator) * 50
    image = mapping.to_raw(parameter)
    assert image.shape == (8, 6, 6, 3)
    assert (image >= domain.low).all() and (image <= domain.high).all()
    assert float(image.min()) < -1.9 and float(image.max()) > 2.9  # bounds are reachable


def test_pixel_makes_no_parameterization():
    assert make_parameterization("pixel", _spec("vector", (4,)), InputDomain()) is None


@pytest.mark.parametrize(
    ("name", "model", "message"),
    [
        ("fourier", lambda: convex_relu_net()[0], "needs an image input"),
        ("fourier+decorrelated", lambda: convex_relu_net()[0], "'vector'"),
        ("fourier+decorrelated", lambda: tiny_cnn(channels=1), "needs 3 colour channels"),
        ("fourier+decorrelated", lambda: tiny_cnn(nhwc=True, channels=4), "has 4"),
    ],
)
def test_unsuitable_inputs_are_clear_errors(name, model, message):
    imported = import_onnx(model())
    with pytest.raises(OnnxAmError, match=message):
        maximize(imported, None, ["standard"], AMConfig.of(steps=1, parameterization=name))


def test_unknown_names_and_smoothing_regularizers_are_refused():
    with pytest.raises(OnnxAmError, match="unknown parameterization 'wavelet'"):
        AMConfig.of(parameterization="wavelet").validate()
    with pytest.raises(OnnxAmError, match="'blur\\(0.5\\)' smooths the raw input"):
        AMConfig.of(parameterization="fourier", regularizers=("blur(0.5)",)).validate()
    AMConfig.of(parameterization="fourier", regularizers=("tv(0.1)", "jitter(1)")).validate()
    AMConfig.of(regularizers=("blur(0.5)",)).validate()  # pixel keeps every regularizer


@pytest.mark.parametrize(
    ("name", "nhwc", "optimizer", "lr"),
    [("fourier", False, "pga", 2.0), ("fourier+decorrelated", True, "adam", 0.2)],
)
def test_fourier_ascent_gains_and_reports_the_true_forward_of_its_image(name, nhwc, optimizer, lr):
    imported = import_onnx(tiny_cnn(nhwc=nhwc))
    domain = InputDomain(0.0, 1.0)
    config = AMConfig.of(steps=40, lr=lr, optimizer=optimizer, parameterization=name, domain=domain)
    report = maximize(imported, None, ["standard", "proxy(0.5)"], config)
    assert report.settings["parameterization"] == name
    for result in report.results:
        assert result.activation > result.trace[0] + 0.05, (result.target, result.method)
        assert result.agrees
        assert result.activation_onnxruntime == pytest.approx(result.activation, rel=1e-5)
        image = torch.from_numpy(result.image)
        assert (image > 0).all() and (image < 1).all()
        (logits,) = imported.run(image[None])
        assert float(logits[0, result.unit]) == pytest.approx(result.activation, rel=1e-6)
        assert result.trace == sorted(result.trace) and result.trace[-1] == result.activation


def test_fourier_runs_are_deterministic_per_seed(cnn):
    def run(seed: int):
        config = AMConfig.of(steps=10, seed=seed, parameterization="fourier+decorrelated")
        return maximize(cnn, ["logits:1"], ["decoupled(0.3)"], config).results[0]

    first, again, other = run(3), run(3), run(4)
    assert first.activation == again.activation and first.trace == again.trace
    np.testing.assert_array_equal(first.image, again.image)
    assert not np.array_equal(first.image, other.image)


def test_the_pixel_path_is_plain_projected_gradient_ascent(cnn):
    """Default config and an explicit "pixel" equal a hand-written PGA loop, bit for bit."""
    config = AMConfig.of(steps=12, lr=0.2, crosscheck=False)
    plain = maximize(cnn, ["logits:2"], ["standard"], config).results[0]
    explicit = maximize(
        cnn,
        ["logits:2"],
        ["standard"],
        config.replaced(parameterization="pixel"),
    ).results[0]
    assert plain.trace == explicit.trace
    np.testing.assert_array_equal(plain.image, explicit.image)

    targets = resolve_targets(cnn, ["logits:2"])
    x = make_starts(
        "random", cnn, config.domain, targets, 1, config.starts.seed, config.starts.init_scale
    )[0]
    extractor = cnn.extractor(["logits"])
    best, best_x = float("-inf"), None
    for step in range(config.ascent.steps + 1):
        x = x.detach().requires_grad_(True)
        value = cnn.batch.call(extractor, x)[0][:, 2]
        if float(value[0].detach()) > best:
            best, best_x = float(value[0].detach()), x.detach().clone()
        if step < config.ascent.steps:
            (grad,) = torch.autograd.grad(value.sum(), x)
            x = (x + config.ascent.lr * grad).clamp(-1, 1)
    assert plain.activation == best
    np.testing.assert_array_equal(plain.image, best_x[0].numpy())


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("m") / "rgb.onnx"
    path.write_bytes(tiny_cnn(size=4).SerializeToString())
    return str(path)


def _invoke(*args: str):
    return CliRunner().invoke(cli, ["analyze", *args], catch_exceptions=False)


@pytest.mark.slow
def test_cli_runs_with_a_parameterization_and_resume_compares_it(rgb_model, tmp_path):
    out = str(tmp_path / "r")
    fast = ["--steps", "5", "--restarts", "1", "--method", "standard", "--out", out]
    result = _invoke(rgb_model, *fast, "--parameterization", "fourier+decorrelated", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["settings"]["parameterization"] == "fourier+decorrelated"
    assert all(entry["agrees"] for entry in doc["results"])
    resumed = _invoke(rgb_model, *fast, "--parameterization", "fourier", "--resume")
    assert resumed.exit_code == 2
    assert "parameterization: 'fourier+decorrelated' -> 'fourier'" in resumed.stderr


def test_cli_refuses_decorrelation_of_a_grey_input_before_writing(tmp_path):
    path = tmp_path / "grey.onnx"
    path.write_bytes(tiny_cnn(channels=1, size=4).SerializeToString())
    out = tmp_path / "r"
    result = _invoke(str(path), "--out", str(out), "--parameterization", "fourier+decorrelated")
    assert result.exit_code == 2
    assert "needs 3 colour channels" in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists()
    assert _invoke(str(path), "--parameterization", "hsv").exit_code == 2
