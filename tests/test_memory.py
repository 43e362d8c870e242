"""The automatic chunk size: row memory measured, budget, division, and the engine using it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from onnx_am_cli.main import cli
from test_engine_models import (
    one_thread,  # noqa: F401  (fixture)
    tiny_cnn,
)
from torch_models import export_random

from onnx_am import import_onnx
from onnx_am.engine import memory
from onnx_am.engine.maximizer import AMConfig, maximize
from onnx_am.errors import OnnxAmError
from onnx_am.methods import STANDARD, GradientMethod
from onnx_am.passes import decouple_rectifiers

pytestmark = pytest.mark.usefixtures("one_thread")

FLOAT = 4


@pytest.fixture(scope="module")
def cnn():
    return import_onnx(tiny_cnn(size=8))


def _saved_per_row(imported, size: int) -> int:
    """Measured saved bytes of one row, without the input buffers."""
    per_row = memory.activation_bytes_per_row(
        imported.extractor(["logits"]), imported.input.sample_shape
    )
    return per_row - memory.INPUT_BUFFERS * 3 * size * size * FLOAT


def test_auto_batch_size_divides_and_clamps():
    assert memory.auto_batch_size(100, 1000, safety=2.0) == 5
    assert memory.auto_batch_size(100, 1099, safety=2.0) == 5  # rounds down
    assert memory.auto_batch_size(100, 10**9) == memory.MAX_BATCH  # capped
    assert memory.auto_batch_size(100, 10**9, cap=7) == 7
    assert memory.auto_batch_size(10**9, 10) == 1  # always at least one row
    assert memory.auto_batch_size(0, 10) == memory.MAX_BATCH  # nothing measurable
    for bad in [(-1, 10), (1, -10), (1, 10, 0), (1, 10, 4, 0.5)]:
        with pytest.raises(OnnxAmError, match="auto_batch_size needs"):
            memory.auto_batch_size(*bad)


def test_row_bytes_grow_with_the_input_and_match_the_activations():
    small, large = import_onnx(tiny_cnn(size=8)), import_onnx(tiny_cnn(size=16))
    saved_small, saved_large = _saved_per_row(small, 8), _saved_per_row(large, 16)
    assert saved_large == pytest.approx(4 * saved_small, rel=0.05)  # 4x the pixels
    # Conv(4) -> Relu -> Conv(5) -> LeakyRelu: the outputs of the four layers per row.
    analytic = (4 + 4 + 5 + 5) * 16 * 16 * FLOAT
    assert 0.5 * analytic <= saved_large <= 2 * analytic


def test_weights_are_not_counted_per_row():
    wide = torch.nn.Linear(256, 4096)  # 4 MiB of weights that require grad, 1 KiB input
    per_row = memory.activation_bytes_per_row(wide, (256,))
    assert per_row == (1 + memory.INPUT_BUFFERS) * 256 * FLOAT  # its input, saved once


def test_rows_mixing_proxy_and_decoupled_save_what_standard_rows_save(cnn):
    """A rewritten ReLU saves its output, which the next layer keeps anyway (runs.py)."""
    rewrite = decouple_rectifiers(cnn)
    extractor = cnn.extractor(["logits"], module=rewrite.module)
    shape = cnn.input.sample_shape
    standard = memory.activation_bytes_per_row(extractor, shape)
    mixed = (STANDARD, GradientMethod("decoupled", 0.3), GradientMethod("proxy", 0.3))
    with_mix = memory.activation_bytes_per_row(
        extractor, shape, rows=3, context=lambda: rewrite.control.rows(mixed)
    )
    assert with_mix == standard
    assert with_mix == memory.activation_bytes_per_row(
        extractor, shape, rows=3, context=lambda: rewrite.control.rows(mixed)
    )
    assert memory.activation_bytes_per_row(extractor, shape) == standard  # slopes restored


def test_budget_is_a_fixed_share_of_total_memory(monkeypatch):
    total = memory._host_total()  # MemTotal of this Linux machine
    assert total is not None and total > 0
    # Taken from the total (not what is free now), so it does not move with the machine's load.
    assert memory.memory_budget("cpu") == int(memory.CPU_FRACTION * total)
    monkeypatch.setattr(memory, "_host_total", lambda: 8 * 1024**3)
    assert memory.memory_budget("cpu") == int(memory.CPU_FRACTION * 8 * 1024**3)
    monkeypatch.setattr(memory, "_host_total", lambda: None)
    assert memory.memory_budget("cpu") == memory.FALLBACK_BUDGET


def _run(imported, **settings):
    config = AMConfig.of(steps=6, restarts=2, crosscheck=False, **settings)
    return maximize(imported, ["logits:0-2", "act2:1"], ["standard", "best"], config)


@pytest.mark.slow
def test_auto_gives_the_same_results_as_that_size_given(cnn, monkeypatch):
    measured = []
    measure = memory.activation_bytes_per_row

    def recording(*args, **kwargs):
        measured.append(measure(*args, **kwargs))
        return measured[-1]

    monkeypatch.setattr(memory, "activation_bytes_per_row", recording)
    monkeypatch.setattr(memory, "memory_budget", lambda device: int(measured[-1] * 2.0 * 3.5))
    auto = _run(cnn)
    assert auto.settings["batch_size"] == 3 and auto.settings["batch_size_auto"] is True
    given = _run(cnn, batch_size=3)
    assert given.settings["batch_size"] == 3 and given.settings["batch_size_auto"] is False
    for a, b in zip(auto.results, given.results, strict=True):
        assert (a.target, a.method, a.activation, a.trace) == (
            b.target,
            b.method,
            b.activation,
            b.trace,
        )
        assert np.array_equal(a.image, b.image)
    whole = _run(cnn, batch_size=64)  # one chunk: the same up to float rounding
    for a, b in zip(auto.results, whole.results, strict=True):
        assert a.activation == pytest.approx(b.activation, rel=1e-5, abs=1e-6)
    json.dumps(auto.settings)


def test_default_is_auto_and_bad_sizes_are_refused(cnn):
    report = _run(cnn)
    assert report.settings["batch_size_auto"] is True
    assert report.settings["batch_size"] == 4 * 2 * 2  # a tiny net fits: every row at once
    with pytest.raises(OnnxAmError, match="batch_size must be >= 1 or None"):
        _run(cnn, batch_size=0)


@pytest.mark.slow
def test_analyze_compares_the_batch_size_only_when_given(tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    model = export_random(net, (1, 2, 2), tmp_path / "lin.onnx")
    fast = ["--steps", "2", "--restarts", "1", "--method", "standard", "-q"]

    def analyze(out: str, *extra: str):
        args = ["analyze", model, *fast, "--out", str(tmp_path / out), *extra]
        return CliRunner().invoke(cli, args, catch_exceptions=False)

    assert analyze("auto").exit_code == 0
    assert "batch_size" not in json.loads((tmp_path / "auto/report.json").read_text())["settings"]
    assert analyze("auto", "--resume").exit_code == 0
    assert analyze("two", "--batch-size", "2").exit_code == 0
    settings = json.loads((tmp_path / "two/report.json").read_text())["settings"]
    assert settings["batch_size"] == 2
    refused = analyze("two", "--resume")
    assert refused.exit_code == 2 and "batch_size" in refused.stderr
    assert analyze("bad", "--batch-size", "0").exit_code == 2


@pytest.mark.slow
def test_memory_benchmark_smoke(tmp_path):
    """benchmarks.memory's functions on a tiny model, so the benchmark does not rot."""
    from benchmarks import memory as bench

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten())
    model = export_random(
        torch.nn.Sequential(net, torch.nn.Linear(8, 3)), (1, 4, 4), tmp_path / "m.onnx"
    )
    rows = bench.row_bytes(model)
    assert rows["mixed_mib"] == rows["standard_mib"] > 0  # the ReLU saves its output
    runs = [bench.run(model, None, classes=3), bench.run(model, 2, classes=3)]
    assert [r["chunk"] for r in runs] == [6, 2]
    text = bench.render(
        {
            "cpu": "x",
            "cores": 1,
            "torch_threads": 1,
            "torch": "t",
            "onnxruntime": "o",
            "python": "p",
        },
        {"rows": rows, "runs": runs},
        "c",
    )
    assert "| auto | 6 | 6 |" in text
