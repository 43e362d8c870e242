"""A name means one thing in the whole package: no two classes share a name."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

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
