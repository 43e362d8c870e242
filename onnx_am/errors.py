"""One exception hierarchy for everything onnx-am reports to its users.

Every error carries the offending value in its message and an ``exit_code`` that the
command line uses: 2 for usage and input errors, 3 for numerical disagreement with
onnxruntime.
"""

from __future__ import annotations

#: Longest message an error built from a foreign exception carries (one line).
MAX_MESSAGE = 300


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line, whitespace collapsed, cut to at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    if len(flat) <= limit:
        return flat
    keep = limit - 24
    return flat[:keep].rstrip() + f" ... (+{len(flat) - keep} chars)"


def shown(name: str, limit: int = 60) -> str:
    """A name from a model as it should appear in a message: ``repr``, cut to ``limit``."""
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


class OnnxAmError(Exception):
    """Base class of all errors raised on purpose by onnx-am."""

    exit_code: int = 2


class ModelLoadError(OnnxAmError):
    """The model file is missing, unreadable, or not a valid ONNX model."""


class ExternalDataError(ModelLoadError):
    """External tensor data is missing or points outside the model's directory."""


class UnsupportedOpError(OnnxAmError):
    """The model contains operators that cannot be converted to torch.

    Attributes:
        nodes: ``(node name, domain, op type, opset version)`` for every offending node.
    """

    def __init__(self, message: str, nodes: list[tuple[str, str, str, int]]):
        super().__init__(message)
        self.nodes = nodes


class ImportFailedError(OnnxAmError):
    """The converter failed on a model whose operators are all supported."""


class InputSpecError(OnnxAmError):
    """The model input cannot be chosen or shaped (no float input, ambiguous, too large)."""


class TargetError(OnnxAmError):
    """A target string names a tensor or unit that does not exist."""


class MethodError(OnnxAmError):
    """A gradient method cannot be parsed or is incomplete (``decoupled(x)``, no slope)."""


class SettingsError(OnnxAmError):
    """A setting is out of range, unknown, or does not fit the model (steps, device,
    step rule, parameterization, regularizer, start)."""


class PassError(OnnxAmError):
    """A graph pass was configured wrongly (unknown op type, node name, or slope)."""


class ReportError(OnnxAmError):
    """The report directory cannot be written or resumed."""


class ResourceLimitError(OnnxAmError):
    """The model asks for more memory or time than onnx-am allows (the limit is named)."""


class DistributedError(OnnxAmError):
    """Ray is missing or unreachable, or a chunk could not be run on any worker."""


class ParityError(OnnxAmError):
    """torch and onnxruntime disagree beyond the stated tolerance."""

    exit_code = 3


class BudgetError(OnnxAmError):
    """The time budget cannot hold even one unit.

    Attributes:
        smallest: the smallest budget, in seconds, that can.
    """

    def __init__(self, message: str, smallest: float):
        super().__init__(message)
        self.smallest = smallest
