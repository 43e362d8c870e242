"""The click parameter types: one shape grammar and one number-list grammar for every command."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from onnx_am_cli.analyze_cmd import analyze_command
from onnx_am_cli.inspect_cmd import inspect_command
from onnx_am_cli.main import cli
from onnx_am_cli.params import FLOATS, SHAPE

from onnx_am.importer.input_spec import parse_shape

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        ("1,3,32,32", (1, 3, 32, 32)),
        ("1x3x32x32", (1, 3, 32, 32)),
        ("1X3X32X32", (1, 3, 32, 32)),
        (" 1, 3, 224, 224 ", (1, 3, 224, 224)),
        ("1 3 8 8", (1, 3, 8, 8)),
        ("7", (7,)),
    ],
)
def test_shapes_in_every_spelling(text, shape):
    assert SHAPE.convert(text, None, None) == shape


@pytest.mark.parametrize("text", ["", "1,0,3", "1,-3", "1,,3", "1x", "1.5,2", "a,b", "1;3", "²"])
def test_bad_shapes_are_refused(text):
    with pytest.raises(click.BadParameter, match="is not a shape"):
        SHAPE.convert(text, None, None)


def test_fed_shapes_share_the_grammar_and_may_be_empty():
    assert parse_shape("0x2, 1", min_dim=0) == (0, 2, 1)
    assert parse_shape("0,2") is None and parse_shape("1,,2", min_dim=0) is None


def test_number_lists():
    assert FLOATS.convert("0.1, 0.3,1", None, None) == (0.1, 0.3, 1.0)
    assert FLOATS.convert("0.123456789", None, None) == (0.123456789,)
    for text in ("", "x", "0.1,nan", "inf"):
        with pytest.raises(click.BadParameter, match="list of numbers"):
            FLOATS.convert(text, None, None)


def test_both_commands_use_the_one_shape_type():
    for command in (analyze_command, inspect_command):
        option = next(p for p in command.params if p.name == "input_shape")
        assert option.type is SHAPE, command.name


@pytest.mark.parametrize("command", ["inspect", "analyze"])
def test_a_bad_shape_is_a_usage_error_in_both_commands(command, tmp_path):
    model = tmp_path / "missing.onnx"
    result = CliRunner().invoke(cli, [command, str(model), "--input-shape", "1x0x6x6"])
    assert result.exit_code == 2 and "is not a shape" in result.output


def test_every_bad_value_is_one_line_and_exit_2():
    """A bad duration, a bad feed and a value click checks all read alike: one line on
    stderr, exit code 2 (no usage block)."""
    model = str(MODELS / "digits_relu.onnx")
    cases = [
        ["analyze", model, "--time-budget", "soon"],
        ["analyze", model, "--feed", "x"],
        ["analyze", model, "--steps", "0"],
        ["inspect", model, "--feed", "x"],
        ["inspect", model, "--input-shape", "abc"],
    ]
    for args in cases:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("onnx-am: error: "), (args, lines)


def test_analyze_and_inspect_share_one_declaration_of_the_import_options():
    names = {"input_name", "input_shape", "feeds"}

    def declared(command):
        return {p.name: (p.opts, p.help) for p in command.params if p.name in names}

    assert declared(analyze_command) == declared(inspect_command)
    assert set(declared(inspect_command)) == names


def test_every_option_is_declared_once():
    folder = Path(__file__).resolve().parents[1] / "cli"
    source = "\n".join(p.read_text() for p in sorted(folder.glob("*.py")))
    declared = re.findall(r"click\.option\(\s*\"(--[\w-]+)\"", source)
    assert {"--json", "--verbose", "--feed", "--steps"} <= set(declared)
    assert sorted(n for n in set(declared) if declared.count(n) > 1) == []
