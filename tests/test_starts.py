"""Start inputs: the ``screened`` start on a tiny model with a known answer, and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from onnx_am_cli.analyze_cmd import analyze_command
from test_engine_models import _model, one_thread, tiny_cnn  # noqa: F401  (fixture)

from onnx_am import import_onnx
from onnx_am.audit.options import AnalyzeOptions, analysis_config
from onnx_am.domain import InputDomain
from onnx_am.engine.maximizer import AMConfig, maximize
from onnx_am.engine.starts import make_starts, screen_pool
from onnx_am.errors import SettingsError
from onnx_am.objectives import parse_targets

pytestmark = pytest.mark.usefixtures("one_thread")

#: The corner where the narrow unit of :func:`narrow_corner_net` is active, and its width.
CORNER = np.array([1.0, -1.0, 1.0, 1.0, -1.0, 1.0], dtype=np.float32)
WIDTH = 0.5


def narrow_corner_net():
    """``y = relu(c . x - (d - w))``: active only where ``|x - c|_1 < 2 w`` around one corner
    ``c`` of ``[-1, 1]^6``; its maximum is ``w``, at ``c``. Near the box centre the unit is
    off, so the true gradient is zero there."""
    d = len(CORNER)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"], name="fc"),
        helper.make_node("Add", ["xw", "b"], ["pre"], name="bias"),
        helper.make_node("Relu", ["pre"], ["y"], name="relu"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [
            numpy_helper.from_array(CORNER[:, None], "W"),
            numpy_helper.from_array(np.array([WIDTH - d], dtype=np.float32), "b"),
        ],
    )


@pytest.fixture(scope="module")
def narrow():
    return import_onnx(narrow_corner_net())


def test_screened_start_finds_the_narrow_maximum_the_centre_start_misses(narrow):
    config = AMConfig.of(steps=20, lr=0.1, normalize_grad=True, restarts=3, crosscheck=False)
    old = maximize(narrow, ["y:0"], ["standard"], config.replaced(start="random"))
    new = maximize(narrow, ["y:0"], ["standard"], config.replaced(start="screened"))
    assert old.results[0].activation == 0.0  # dead around the centre: zero gradient
    assert new.results[0].activation == pytest.approx(WIDTH, rel=1e-6)
    assert np.array_equal(new.results[0].image, CORNER)


def test_random_stays_the_default_start_of_the_library_and_analyze():
    # screened is opt-in: it did not help the trained CNNs (benchmarks/results/am_quality_starts.md)
    assert AMConfig().starts.start == AnalyzeOptions().optimize.start == "random"


def test_screened_starts_are_deterministic_and_independent_of_the_other_units():
    cnn = import_onnx(tiny_cnn())
    domain = InputDomain()
    targets = parse_targets(["logits:0-2", "act2:1"], cnn, 64)

    def starts(chosen, seed=0):
        return make_starts("screened", cnn, domain, chosen, 2, seed, screen=32)

    together = starts(targets)
    assert torch.equal(together, starts(targets))
    for t, target in enumerate(targets):
        assert torch.equal(starts([target])[0], together[t])  # alone = in company
    assert not torch.equal(starts(targets, seed=1), together)
    assert not torch.equal(together[:, 0], together[:, 1])  # one pool per restart
    pool = screen_pool(cnn.input.sample_shape, domain, 0, 0, 32)
    assert set(pool.unique().tolist()) == {-1.0, 1.0}  # corners of the box
    # each start is its unit's best candidate of restart 0's pool
    values = cnn.run(pool, ["logits"])[0][:, 0]
    assert torch.equal(together[0, 0], pool[values.argmax()])


def test_screen_must_have_a_candidate(narrow):
    with pytest.raises(SettingsError, match="screen must be >= 1"):
        maximize(narrow, ["y:0"], ["standard"], AMConfig.of(screen=0))


def test_analyze_takes_the_start_from_its_options_and_the_command_line():
    config = analysis_config(AnalyzeOptions.of(start="screened", screen=8), InputDomain())
    assert (config.starts.start, config.starts.screen) == ("screened", 8)
    text = CliRunner().invoke(analyze_command, ["--help"]).output
    assert "--start [random|lower|upper|mid|random_corner|dead|screened|hedged]" in text
    assert "--screen" in text


def test_hedged_start_keeps_the_centre_for_restart_0_and_screens_the_others(narrow):
    """Restart 0 is the random start exactly, restarts 1.. the screened ones exactly; the
    narrow maximum is still found (by a screened restart)."""
    domain = InputDomain()
    targets = parse_targets(["y:0"], narrow, 64)
    hedged = make_starts("hedged", narrow, domain, targets, 3, seed=5, screen=64)
    random = make_starts("random", narrow, domain, targets, 3, seed=5)
    screened = make_starts("screened", narrow, domain, targets, 3, seed=5, screen=64)
    assert torch.equal(hedged[:, 0], random[:, 0])
    assert torch.equal(hedged[:, 1:], screened[:, 1:])
    config = AMConfig.of(steps=20, normalize_grad=True, restarts=3, crosscheck=False)
    found = maximize(narrow, ["y:0"], ["standard"], config.replaced(start="hedged"))
    assert found.results[0].activation == pytest.approx(WIDTH, rel=1e-6)


def test_screening_forwards_are_priced_per_screened_restart():
    from onnx_am.engine.starts import screening_forwards

    assert screening_forwards("random", 3, 384) == 0
    assert screening_forwards("screened", 3, 384) == 3 * 384
    assert screening_forwards("hedged", 3, 384) == 2 * 384
    assert screening_forwards("hedged", 1, 384) == 0
