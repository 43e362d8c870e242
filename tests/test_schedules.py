"""Step-size schedules: factors at known steps, and errors for bad settings."""

from __future__ import annotations

import math

import pytest

from onnx_am.engine.schedules import LR_SCHEDULES, check_lr_schedule, lr_factor
from onnx_am.errors import SettingsError


def test_constant_is_one_everywhere():
    assert [lr_factor("constant", s, 10) for s in range(10)] == [1.0] * 10


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_decays_start_at_one_end_at_the_floor_and_never_rise(kind):
    factors = [lr_factor(kind, s, 11, floor=0.1) for s in range(11)]
    assert factors[0] == 1.0 and math.isclose(factors[-1], 0.1)
    assert all(a >= b for a, b in zip(factors, factors[1:], strict=False))


def test_linear_and_cosine_midpoints():
    assert math.isclose(lr_factor("linear", 5, 11, floor=0.0 + 1e-9), 0.5, abs_tol=1e-8)
    assert math.isclose(lr_factor("cosine", 5, 11, floor=0.2), 0.2 + 0.8 * 0.5)


def test_warm_restarts_restart_at_one_and_settle_at_the_end():
    factors = [lr_factor("cosine-restarts", s, 12, floor=0.1, cycles=3) for s in range(12)]
    assert factors[0] == factors[4] == factors[8] == 1.0  # three cycles of four steps
    assert math.isclose(factors[3], 0.1) and math.isclose(factors[-1], 0.1)
    assert factors[3] < factors[4]


def test_bad_settings_name_the_value():
    with pytest.raises(SettingsError, match="'warm'"):
        check_lr_schedule("warm", 0.1, 1)
    with pytest.raises(SettingsError, match="floor"):
        check_lr_schedule("cosine", 0.0, 1)
    with pytest.raises(SettingsError, match="cycles"):
        check_lr_schedule("cosine-restarts", 0.1, 0)
    for kind in LR_SCHEDULES:
        check_lr_schedule(kind, 0.5, 2)


def test_transforms_keep_shape_and_are_seeded():
    import torch

    from onnx_am.engine.regularizers import ROBUST_TRANSFORMS, parse_regularizer
    from onnx_am.importer.input_spec import InputSpec

    spec = InputSpec("x", ("batch", 3, 16, 16), "float32", (3, 16, 16), "NCHW")
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for text in ROBUST_TRANSFORMS:
        transform = parse_regularizer(text)
        a = transform.transform(x, spec, torch.Generator().manual_seed(1))
        b = transform.transform(x, spec, torch.Generator().manual_seed(1))
        assert a.shape == x.shape and torch.equal(a, b), text
    # scale and rotate by 0 are the identity (bilinear at pixel centres)
    for text in ("scale(0)", "rotate(0)"):
        same = parse_regularizer(text).transform(x, spec, torch.Generator().manual_seed(1))
        assert torch.allclose(same, x, atol=1e-6), text
