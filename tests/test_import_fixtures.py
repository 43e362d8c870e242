"""Every committed fixture and sample model imports and matches onnxruntime."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnx_am import check_parity, import_onnx

ROOT = Path(__file__).resolve().parents[1]
#: Fixtures whose input has symbolic spatial dims need a shape.
SHAPES = {"tf2onnx_cnn.onnx": (1, 24, 20, 3), "mtcnn_prelu.onnx": (1, 3, 24, 24)}
PATHS = sorted([*ROOT.glob("tests/fixtures/*.onnx"), *ROOT.glob("models/*.onnx")])


def test_fixtures_are_present() -> None:
    names = {p.name for p in PATHS}
    assert {"tf2onnx_cnn.onnx", "paddle_mobilenetv3_like.onnx"} <= names


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_fixture_imports_with_parity(path: Path) -> None:
    imported = import_onnx(path, input_shape=SHAPES.get(path.name))
    result = check_parity(imported, samples=2)
    assert result.passed, (path.name, result.max_abs_diff)
    assert imported.batch.mode in ("dynamic", "rewritten", "rowwise")
