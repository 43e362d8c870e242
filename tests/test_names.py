"""A name means one thing in the whole package: no two classes share a name."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import onnx_am


def test_no_two_classes_of_the_package_share_a_name():
    where: dict[str, set[str]] = {}
    for info in pkgutil.walk_packages(onnx_am.__path__, "onnx_am."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if inspect.isclass(obj) and obj.__module__ == module.__name__:
                where.setdefault(obj.__qualname__, set()).add(module.__name__)
    assert len(where) > 100  # the walk found the package
    assert {name: sorted(mods) for name, mods in where.items() if len(mods) > 1} == {}


def test_a_plan_is_parsed_by_one_function_and_run_by_another():
    # parse_run_plan builds a RunPlan from what a caller gave; maximize_plan runs one.
    assert inspect.signature(onnx_am.parse_run_plan).return_annotation == "RunPlan"
    assert list(inspect.signature(onnx_am.maximize_plan).parameters)[:2] == ["imported", "plan"]
    assert not hasattr(onnx_am, "plan_run") and not hasattr(onnx_am, "run_plan")


class _Loaded(Exception):
    """Raised by the patched pipeline: the entry point got there."""


@pytest.mark.parametrize("entry", ["analyze", "estimate_analysis", "analyze_many"])
def test_every_way_in_imports_and_plans_through_the_one_pipeline(entry, monkeypatch, tmp_path):
    from onnx_am.audit.pipeline import AuditPipeline

    analyze = importlib.import_module("onnx_am.audit.analyze")
    many = importlib.import_module("onnx_am.audit.many")

    def load(self, source):
        raise _Loaded(str(source))

    monkeypatch.setattr(AuditPipeline, "load", load)
    model = Path(__file__).resolve().parents[1] / "models" / "digits_relu.onnx"
    calls = {
        "analyze": lambda: analyze.analyze(model, out_dir=tmp_path / "r"),
        "estimate_analysis": lambda: analyze.estimate_analysis(model),
        "analyze_many": lambda: many.analyze_many([model], root=tmp_path / "m"),
    }
    with pytest.raises(_Loaded, match="digits_relu"):
        calls[entry]()
