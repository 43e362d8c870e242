"""The input domain: box, projection, per-channel normalisation in NCHW and NHWC, measures."""

from __future__ import annotations

import pytest
import torch

from onnx_am.domain import InputDomain, parse_domain
from onnx_am.errors import InputSpecError
from onnx_am.importer.input_spec import InputSpec


def _spec(layout: str, sample: tuple[int, ...]) -> InputSpec:
    return InputSpec("input", ("N", *sample), "float32", sample, layout)


def test_default_is_the_papers_box():
    domain = InputDomain()
    assert (domain.low, domain.high, domain.mid) == (-1.0, 1.0, 0.0)
    x = torch.tensor([[-3.0, -0.5, 0.5, 2.0]])
    assert domain.project(x).tolist() == [[-1.0, -0.5, 0.5, 1.0]]
    assert torch.equal(domain.to_model(x, _spec("vector", (4,))), x)


def test_saturation_and_white():
    domain = parse_domain("0..255")
    x = torch.tensor([[0.0, 255.0, 255.0, 100.0], [10.0, 20.0, 30.0, 40.0]])
    assert domain.saturation(x).tolist() == [0.75, 0.0]
    assert domain.white(x).tolist() == [0.5, 0.0]


@pytest.mark.parametrize(
    ("layout", "sample", "axis"), [("NCHW", (3, 2, 2), 1), ("NHWC", (2, 2, 3), 3)]
)
def test_mean_std_along_the_channel_axis(layout, sample, axis):
    domain = parse_domain("0..255", mean="10,20,30", std=[1, 2, 4])
    x = torch.full((1, *sample), 50.0)
    fed = domain.to_model(x, _spec(layout, sample))
    per_channel = fed.movedim(axis, -1).reshape(-1, 3)
    assert per_channel[0].tolist() == [40.0, 15.0, 5.0]
    assert torch.equal(per_channel, per_channel[:1].expand_as(per_channel))
    low, high = domain.bounds(_spec(layout, sample))
    assert low.movedim(axis - 1, -1).reshape(-1, 3)[0].tolist() == [-10.0, -10.0, -7.5]
    assert high.movedim(axis - 1, -1).reshape(-1, 3)[0].tolist() == [245.0, 117.5, 56.25]


def test_channel_count_checked():
    with pytest.raises(InputSpecError, match="mean has 2 values .* has 3 channels"):
        parse_domain("0..1", mean="0.5,0.5").check(_spec("NHWC", (4, 4, 3)))
    parse_domain("0..1", mean="0.5").check(_spec("NHWC", (4, 4, 3)))


@pytest.mark.parametrize(
    ("text", "mean", "std", "message"),
    [
        ("1..0", None, None, "1.0..0.0 is empty"),
        ("0-255", None, None, "cannot parse input range '0-255'"),
        ("0..1", "a,b", None, "cannot parse mean 'a,b'"),
        ("0..1", None, "0,1", r"std \[0.0, 1.0\] must be positive"),
    ],
)
def test_errors(text, mean, std, message):
    with pytest.raises(InputSpecError, match=message):
        parse_domain(text, mean, std)
