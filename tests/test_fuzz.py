"""The fuzzer's short fixed-seed run, and the promise that no file outside a model's
directory is ever opened (a canary file watched with inotify)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_am import OnnxAmError, check_parity, import_onnx
from onnx_am.importer.loading import load_model
from onnx_am.reference.runtime import OnnxRuntimeRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fuzz import campaign as fuzz  # noqa: E402

#: whole audits, subprocesses or browsers: `pytest -m "not slow"` skips them
pytestmark = pytest.mark.slow

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs inotify")

#: Cases of the short run: every mutator family 30 times over the small seeds.
SHORT_RUN_CASES = 300
#: Seconds without an answer after which a case counts as a hang: a safety net against a real
#: hang, far above what any case takes on a loaded machine (the run must not race the clock).
HANG_SECONDS = 600


@linux_only
def test_short_fuzz_run_has_no_failures() -> None:
    results = fuzz.run_campaign(
        cases=SHORT_RUN_CASES, seed=0, timeout=HANG_SECONDS, max_seed_bytes=50_000, memory_gib=3
    )
    counts = fuzz.tally(results)
    assert len(results) == SHORT_RUN_CASES
    assert {f: counts.get(f, 0) for f in fuzz.FAILURES} == dict.fromkeys(fuzz.FAILURES, 0), [
        (r.index, r.outcome, r.problems, r.error, r.steps) for r in fuzz.failures(results)
    ]
    assert counts["clean error"] > 0 and counts["parity passed"] > 0


def test_cases_are_deterministic() -> None:
    seeds = fuzz.load_seeds(max_bytes=50_000)
    first, _, _ = fuzz.make_case(17, seeds, 3)
    again, _, _ = fuzz.make_case(17, seeds, 3)
    assert first.serialized() == again.serialized() and first.steps == again.steps


# --- no file outside the model's directory is opened ---------------------------------------


def _point_at(tensor: TensorProto, location: str) -> None:
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)


def _canary_models(location: str) -> dict[str, onnx.ModelProto]:
    """A model per kind of tensor, each with its data 'external' at ``location``."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    add = helper.make_node("Add", ["x", "w"], ["y"], name="add")

    def model(nodes, initializers=(), sparse=()) -> onnx.ModelProto:
        graph = helper.make_graph(
            nodes, "g", [x], [y], list(initializers), sparse_initializer=sparse
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    dense = numpy_helper.from_array(np.ones(4, np.float32), "w")
    _point_at(dense, location)
    values = numpy_helper.from_array(np.ones(4, np.float32), "w")
    _point_at(values, location)
    indices = numpy_helper.from_array(np.arange(4, dtype=np.int64), "")
    sparse = onnx.SparseTensorProto(values=values, indices=indices, dims=[4])
    attribute = numpy_helper.from_array(np.ones(4, np.float32), "w")
    _point_at(attribute, location)
    constant = helper.make_node("Constant", [], ["w"], name="const", value=attribute)
    branch_tensor = numpy_helper.from_array(np.ones(4, np.float32), "bw")
    _point_at(branch_tensor, location)
    branch = helper.make_graph(
        [helper.make_node("Identity", ["bw"], ["w_branch"], name="bid")],
        "branch",
        [],
        [helper.make_tensor_value_info("w_branch", TensorProto.FLOAT, [4])],
        [branch_tensor],
    )
    cond = numpy_helper.from_array(np.array(True), "cond")
    subgraph = helper.make_node(
        "If", ["cond"], ["w"], name="if", then_branch=branch, else_branch=branch
    )
    return {
        "dense": model([add], [dense]),
        "sparse": model([add], sparse=[sparse]),
        "attribute": model([constant, add]),
        "subgraph": model([subgraph, add], [cond]),
    }


@linux_only
@pytest.mark.parametrize("location", ["canary.bin", "../canary.bin", "CANARY_ABSOLUTE"])
def test_no_file_outside_the_model_directory_is_opened(tmp_path, monkeypatch, location) -> None:
    """The canary sits in the working directory and in the models' parent folder; a sparse
    initializer's location used to be resolved by onnxruntime against the working directory."""
    work, folder = tmp_path / "work", tmp_path / "work" / "models" / "m"
    folder.mkdir(parents=True)
    canaries = [work / "canary.bin", work / "models" / "canary.bin"]
    for canary in canaries:
        canary.write_bytes(np.ones(4, np.float32).tobytes())
    location = str(canaries[0]) if location == "CANARY_ABSOLUTE" else location
    monkeypatch.chdir(work)
    watch = fuzz.CanaryWatch(canaries)
    try:
        for kind, model in _canary_models(location).items():
            path = folder / f"{kind}.onnx"
            path.write_bytes(model.SerializeToString())
            with pytest.raises(OnnxAmError, match="external data"):
                check_parity(import_onnx(path))
            with pytest.raises(OnnxAmError, match="external data"):
                OnnxRuntimeRunner(load_model(path), "x").run(np.ones((1, 4), np.float32))
            with pytest.raises(OnnxAmError):
                check_parity(import_onnx(model))  # as a proto: nothing is resolved at all
            assert not watch.opened(), f"{kind} tensor at {location!r} opened the canary"
        with open(canaries[0], "rb") as handle:  # the watch itself works
            handle.read(1)
        assert watch.opened()
    finally:
        watch.close()


def test_the_same_tensors_load_when_beside_the_model(tmp_path) -> None:
    """The four kinds load from a file inside the model's directory (the check is not a
    blanket refusal)."""
    (tmp_path / "w.bin").write_bytes(np.full(4, 2, np.float32).tobytes())
    for kind, model in _canary_models("w.bin").items():
        path = tmp_path / f"{kind}.onnx"
        path.write_bytes(model.SerializeToString())
        if kind == "sparse":  # onnx2torch has no sparse initializers: loading is enough
            loaded = load_model(path).graph.sparse_initializer[0].values
            assert loaded.raw_data == (tmp_path / "w.bin").read_bytes()
            continue
        try:
            assert check_parity(import_onnx(path)).passed, kind
        except OnnxAmError as exc:  # a converter limit, never an external-data refusal
            assert "external data" not in str(exc), (kind, exc)
    assert os.path.exists(tmp_path / "w.bin")


def test_a_case_may_ask_for_the_same_pipe_twice(tmp_path) -> None:
    case = fuzz.Case(None, data=b"\x08\x01", fifos=["fifo", "fifo"])
    assert fuzz.write_case(case, tmp_path / "c").read_bytes() == b"\x08\x01"
