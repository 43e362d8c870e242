"""``--device``: auto, cpu and cuda[:N]; the CUDA path where a GPU exists (skipped without).

On a machine without CUDA only the resolution rules and the benchmark script's CPU smoke
run are checked; the GPU tests below need a CUDA device.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from test_engine_models import tiny_cnn

from onnx_am import import_onnx
from onnx_am.engine import memory
from onnx_am.engine.device import resolve_device
from onnx_am.engine.maximizer import AMConfig, maximize
from onnx_am.errors import OnnxAmError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_auto_is_cuda_only_when_torch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("CPU") == "cpu"
    with pytest.raises(OnnxAmError, match="no CUDA device"):
        resolve_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(OnnxAmError, match="sees 2 CUDA device"):
        resolve_device("cuda:2")
    for bad in ("tpu", "cuda:x", "cuda1"):
        with pytest.raises(OnnxAmError, match=repr(bad)):
            resolve_device(bad)


def test_chunks_are_larger_on_a_gpu():
    assert memory.max_batch("cpu") == memory.MAX_BATCH
    assert memory.max_batch("cuda:0") == memory.MAX_BATCH_CUDA > memory.MAX_BATCH


@pytest.mark.slow
def test_gpu_benchmark_runs_on_the_cpu_with_a_tiny_model(tmp_path):
    from benchmarks.gpu import main

    result = main(
        ["--device", "cpu", "--model", "tiny", "--rows", "4", "--steps", "3", "--repeat", "1"]
        + ["--units", "2", "--audit-steps", "3", "--out", str(tmp_path)]
    )
    assert [row["method"] for row in result["steps"]] == ["standard", "decoupled(0.3)"]
    assert all(row["ratio"] > 0 for row in result["steps"])
    assert result["audit"]["units"] == 2 and result["audit"]["units_per_minute"] > 0
    assert (tmp_path / "gpu_tiny.json").is_file()


@cuda
def test_cuda_results_match_the_cpu_and_onnxruntime():
    imported = import_onnx(tiny_cnn())
    methods = ["standard", "decoupled(0.3)", "best"]
    config = AMConfig.of(steps=20, restarts=2, normalize_grad=True)
    on_cpu = maximize(imported, ["logits:0-2"], methods, config)
    on_gpu = maximize(imported, ["logits:0-2"], methods, config.replaced(device="cuda"))
    for a, b in zip(on_cpu.results, on_gpu.results, strict=True):
        assert b.agrees and a.activation == pytest.approx(b.activation, rel=1e-3, abs=1e-4)


@cuda
def test_no_host_sync_per_step():
    imported = import_onnx(tiny_cnn())

    def syncs(steps: int) -> int:
        config = AMConfig.of(steps=steps, device="cuda", crosscheck=False, batch_size=8)
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                maximize(imported, ["logits:0-3"], ["standard", "decoupled(0.3)"], config)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(5) == syncs(25)  # set-up and results only, nothing that grows with steps


@cuda
def test_analyze_defaults_to_the_gpu(tmp_path):
    import onnx

    from onnx_am.audit.analyze import AnalyzeOptions, analyze
    from onnx_am.importer.loading import load_model  # noqa: F401

    path = tmp_path / "cnn.onnx"
    onnx.save(tiny_cnn(), path)
    report = analyze(path, AnalyzeOptions.of(steps=8, restarts=1), tmp_path / "r")
    assert report.doc["settings"]["device"] == "cuda"
    assert report.doc["plan"]["device"] == "cuda" and report.exit_code == 0
