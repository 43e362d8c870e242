"""Every committed fixture and sample model imports and matches onnxruntime."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from onnx_am import check_parity, import_onnx
from onnx_am.audit.inspection import find_rectifiers, onnx_rectifiers

ROOT = Path(__file__).resolve().parents[1]
#: Fixtures whose input has symbolic spatial dims need a shape.
SHAPES = {"tf2onnx_cnn.onnx": (1, 24, 20, 3), "mtcnn_prelu.onnx": (1, 3, 24, 24)}
PATHS = sorted([*ROOT.glob("tests/fixtures/*.onnx"), *ROOT.glob("models/*.onnx")])


def test_fixtures_are_present() -> None:
    names = {p.name for p in PATHS}
    assert {"tf2onnx_cnn.onnx", "paddle_mobilenetv3_like.onnx"} <= names


@cache
def imported_fixture(path: Path):
    """Each fixture imported once for the tests of this module."""
    return import_onnx(path, input_shape=SHAPES.get(path.name))


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_fixture_imports_with_parity(path: Path) -> None:
    imported = imported_fixture(path)
    result = check_parity(imported, samples=2)
    assert result.passed, (path.name, result.max_abs_diff)
    # only the fixture exported for batch 1 needs the rewrite; none falls back to rowwise
    expected = "rewritten" if path.name.startswith("fixed_batch") else "dynamic"
    assert imported.batch.mode == expected


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_inspect_and_the_pass_agree_on_every_node(path: Path) -> None:
    """inspect's graph-only answer (for unimportable models) is the pass's, node by node."""
    imported = imported_fixture(path)
    by_pass = find_rectifiers(imported)
    assert onnx_rectifiers(imported.prepared) == by_pass
    assert onnx_rectifiers(imported.original) == by_pass  # before the pre-passes, too
