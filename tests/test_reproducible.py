"""Same seed, device and thread count: the same numbers in every process (MKL's CNR mode)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

#: whole audits, subprocesses or browsers: `pytest -m "not slow"` skips them
pytestmark = pytest.mark.slow


def _mkl_cbwr_after_import(module: str, preset: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    if preset is not None:
        env["MKL_CBWR"] = preset
    code = f"import {module}, os; print(os.environ.get('MKL_CBWR'))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_importing_onnx_am_turns_on_reproducible_blas():
    assert _mkl_cbwr_after_import("onnx_am", None) == "AUTO"
    assert _mkl_cbwr_after_import("onnx_am_cli", None) == "AUTO"


def test_a_users_setting_is_kept():
    assert _mkl_cbwr_after_import("onnx_am", "COMPATIBLE") == "COMPATIBLE"
