"""onnx-am: activation maximization for any ONNX model, with decoupled rectifier gradients."""

from __future__ import annotations

from onnx_am.errors import (
    ExternalDataError,
    ImportFailedError,
    InputSpecError,
    ModelLoadError,
    OnnxAmError,
    ParityError,
    PassError,
    ReportError,
    TargetError,
    UnsupportedOpError,
)
from onnx_am.importer import ImportedModel, import_onnx
from onnx_am.parity import ParityResult, check_parity

__version__ = "0.1.0"

__all__ = [
    "ExternalDataError",
    "ImportFailedError",
    "ImportedModel",
    "InputSpecError",
    "ModelLoadError",
    "OnnxAmError",
    "ParityError",
    "ParityResult",
    "PassError",
    "ReportError",
    "TargetError",
    "UnsupportedOpError",
    "check_parity",
    "import_onnx",
]
