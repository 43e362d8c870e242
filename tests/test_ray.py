"""analyze on Ray workers: a real local Ray instance (no mocks), shared by this module.

The module's executor starts that instance itself (``ray.init(num_cpus=...)`` as the command
does) and its two workers serve every test; each chunk is one unit so that a run has several.
Reports are compared by ``report.json`` and images; plots and pages are left out here (their
drawing does not depend on where chunks ran and is tested elsewhere) to keep the module fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from torch_models import export_random

import onnx_am.audit.chunks as chunks_module
import onnx_am.audit.render.site as site_module
from onnx_am.audit.analyze import AnalyzeOptions, AnalyzeProgress, analyze
from onnx_am.audit.many import analyze_many

if os.environ.get("CI"):
    import ray  # CI installs the test extra, which has Ray: its absence is a failure there
else:
    ray = pytest.importorskip("ray")

from onnx_am.audit.ray_executor import RayExecutor  # noqa: E402

#: whole audits, subprocesses or browsers: `pytest -m "not slow"` skips them
pytestmark = pytest.mark.slow

OPTIONS = AnalyzeOptions.of(steps=8, restarts=1, methods=("standard", "decoupled(0.3)"))


#: What the plan measured (times, memory) and what a resumed run found done: not the work.
MEASURED = (
    "seconds_per_step",
    "estimated_seconds",
    "spent_seconds",
    "overhead_seconds",
    "kept_for_other_models_seconds",
    "peak_memory_bytes",
    "units_done",
)


def comparable(doc: dict) -> dict:
    """The document less its timings and the plan's measurements; the fitted work stays."""
    kept = {k: v for k, v in doc.items() if k != "timings"}
    if isinstance(kept.get("plan"), dict):
        kept["plan"] = {k: v for k, v in kept["plan"].items() if k not in MEASURED}
    return kept


@pytest.fixture(scope="module")
def executor():
    """Two workers on a local Ray instance that the executor starts and stops itself."""
    assert not ray.is_initialized()
    with RayExecutor(workers=2) as started:
        started.start_workers()
        assert ray.cluster_resources()["CPU"] >= 2 and len(started.actors) == 2
        # at Ray's default nice 15 any busy process starves the workers (issue 24)
        for pid in ray.get([actor.ready.remote() for actor in started.actors]):
            assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0)
        yield started
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("models")
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 5)
    )
    mlp = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    return [
        export_random(cnn, (1, 6, 6), folder / "cnn.onnx"),
        export_random(mlp, (5,), folder / "mlp.onnx"),
    ]


@pytest.fixture(scope="module")
def unit_chunks():
    """One unit per chunk (standard and decoupled rows of one restart); no plots or pages."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(chunks_module, "CHUNK_ROWS", 2)
        patch.setattr(site_module, "render_plots", lambda *args: [])
        yield


@pytest.fixture(scope="module")
def alone(models, tmp_path_factory, unit_chunks):
    """Both models audited in this process, one after the other: the reference."""
    return analyze_many(models, OPTIONS, tmp_path_factory.mktemp("alone"))


class KillBusiest:
    """Kill the first worker that holds two chunks, right when the second is sent to it: that
    one waits behind the first, so it is certainly lost with the worker."""

    def __init__(self, executor: RayExecutor):
        self.executor, self.killed = executor, None

    def __call__(self, event: AnalyzeProgress) -> None:
        if event.phase != "optimize" or self.killed is not None:
            return
        queued = self.executor.queued
        busy = [actor for actor, count in queued.items() if count >= 2]
        if busy:
            self.killed = busy[0]
            ray.kill(self.killed)


def test_workers_give_the_single_process_report_also_when_one_is_killed(
    executor, models, alone, tmp_path, unit_chunks
):
    kill = KillBusiest(executor)
    spread = analyze(models[0], OPTIONS, tmp_path / "ray", progress=kill, executor=executor)
    assert kill.killed is not None and executor.retried >= 1
    assert kill.killed not in executor.actors and len(executor.actors) == 2  # replaced
    keys = [(r["target"], r["method"]) for r in spread.doc["results"]]
    assert len(keys) == len(set(keys)) == 5 * 2  # every unit and method once
    reference = alone.reports["cnn"]
    assert comparable(spread.doc) == comparable(reference.doc)
    for a, b in zip(reference.results, spread.results, strict=True):
        assert (a.image == b.image).all()


class Interrupt:
    def __init__(self, after: int):
        self.after = after

    def __call__(self, event: AnalyzeProgress) -> None:
        if event.phase == "optimize" and event.units_done >= self.after:
            raise KeyboardInterrupt


def test_many_models_share_the_workers_and_resume_after_a_kill(
    executor, models, alone, tmp_path, unit_chunks
):
    with pytest.raises(KeyboardInterrupt):
        analyze_many(models, OPTIONS, tmp_path / "ray", Interrupt(after=3), executor)
    index = json.loads((tmp_path / "ray" / "index.json").read_text())
    assert [m["name"] for m in index["models"]] == ["cnn", "mlp"]
    resumed = analyze_many(
        models,
        OPTIONS.replaced(resume=True),
        tmp_path / "ray",
        executor=executor,
    )
    assert set(resumed.reports) == {"cnn", "mlp"} and resumed.exit_code == 0
    for name, report in resumed.reports.items():
        assert report.doc["status"] == "complete"
        assert comparable(report.doc) == comparable(alone.reports[name].doc)
    index = json.loads((tmp_path / "ray" / "index.json").read_text())
    assert [m["status"] for m in index["models"]] == ["complete", "complete"]
    assert [m["units"] for m in index["models"]] == [5, 3]
    html = (tmp_path / "ray" / "index.html").read_text()
    assert 'href="cnn/index.html"' in html and 'href="mlp/index.html"' in html


def test_cli_workers_on_a_directory(executor, models, tmp_path):
    from onnx_am_cli.main import cli

    executor.stop_workers()  # free the CPUs for the command's own workers
    folder = os.path.dirname(models[0])
    args = ["analyze", folder, "--workers", "2", "--steps", "4", "--restarts", "1"]
    result = CliRunner().invoke(cli, [*args, "--method", "standard", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "index: " in result.output
    assert (tmp_path / "cnn" / "report.json").is_file()
    assert (tmp_path / "mlp" / "report.json").is_file()
    assert ray.is_initialized()  # the module's instance, joined and left running


def test_the_default_path_imports_no_ray(models, tmp_path):
    code = (
        "import sys; from onnx_am_cli.main import cli; "
        f"cli(['analyze', {models[1]!r}, '--steps', '2', '--restarts', '1', '-q', "
        f"'--out', {str(tmp_path / 'r')!r}], standalone_mode=False); "
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
