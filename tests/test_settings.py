"""Settings nest by concern: no settings object is larger than can be read at a glance, and
flat keywords reach the group that declares them."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import onnx_am
from onnx_am.audit.options import AnalyzeOptions, OptimizeSettings, SearchSettings
from onnx_am.engine.config import AMConfig, AscentSettings
from onnx_am.settings import MAX_FIELDS, flat, flat_names, groups, is_settings


def _package_classes() -> list[type]:
    """Every class defined in a module of the onnx_am package."""
    classes = []
    for info in pkgutil.walk_packages(onnx_am.__path__, "onnx_am."):
        module = importlib.import_module(info.name)
        classes += [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj) and obj.__module__ == module.__name__
        ]
    return classes


def _settings_classes() -> set[type]:
    """The settings dataclasses and every dataclass their defaults hold (groups, the input
    domain, the probe limit)."""
    found: set[type] = set()
    todo = [cls for cls in _package_classes() if is_settings(cls)]
    while todo:
        cls = todo.pop()
        if cls in found:
            continue
        found.add(cls)
        values = [getattr(cls(), f.name) for f in dataclasses.fields(cls)]
        todo += [type(v) for v in values if dataclasses.is_dataclass(v)]
    return found


def test_no_settings_object_has_more_than_twelve_fields():
    classes = _settings_classes()
    assert {AMConfig, AnalyzeOptions, AscentSettings, SearchSettings} <= classes
    large = {cls.__name__: len(dataclasses.fields(cls)) for cls in classes}
    assert {name: n for name, n in large.items() if n > MAX_FIELDS} == {}


def test_every_flat_keyword_names_one_setting():
    for cls in (AMConfig, AnalyzeOptions):
        names = flat_names(cls)  # raises on a name declared by two groups
        assert set(names) == set(flat(cls()))
        assert set(groups(cls)) <= set(f.name for f in dataclasses.fields(cls))


def test_flat_keywords_go_to_their_group_and_keep_the_other_defaults():
    options = AnalyzeOptions.of(steps=64, targets=("logits:3",), time_budget=None, force=True)
    assert options.optimize == OptimizeSettings(steps=64)
    assert options.search.targets == ("logits:3",) and options.search.layers == ()
    assert options.budget.time_budget is None and options.output.force
    assert options.imports == AnalyzeOptions().imports
    config = AMConfig.of(steps=5, restarts=2, crosscheck=False, device="cpu")
    assert (config.ascent.steps, config.starts.restarts, config.checks.crosscheck) == (5, 2, False)
    assert config.ascent.lr == AscentSettings().lr


def test_a_group_can_be_given_whole_and_a_copy_changes_only_what_is_named():
    search = SearchSettings(targets=("y:0",), max_units=4)
    options = AnalyzeOptions(search=search)
    assert AnalyzeOptions.of(search=search) == options
    again = options.replaced(resume=True, steps=3)
    assert again.search is search and again.output.resume and again.optimize.steps == 3
    assert not options.output.resume  # frozen: the original is unchanged


def test_an_unknown_keyword_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="'stepz'"):
        AnalyzeOptions.of(stepz=3)
    with pytest.raises(TypeError, match="'time_budget'"):
        AMConfig.of(time_budget=3)


def test_the_report_keeps_the_flat_config_keys():
    data = AMConfig.of(steps=7, seed=3).to_dict()
    assert data["steps"] == 7 and data["seed"] == 3 and data["crosscheck"] is True
    assert "ascent" not in data and isinstance(data["domain"], dict)


def test_the_settings_example_in_the_api_docs_runs():
    text = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    section = text.split("## Settings", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "docs/api.md", "exec"), {})  # noqa: S102 - our own docs
