"""Turn what onnx, onnx2torch, torch or onnxruntime raise on a bad model into our errors.

Those libraries raise assorted exception types (``InferenceError``, ``KeyError``,
``RuntimeError``, onnxruntime's ``Fail``...) with messages that may span many lines. Inside
:func:`foreign_errors`, an exception raised by one of them becomes the given
:class:`~onnx_am.errors.OnnxAmError` subclass with one readable line. An exception raised by
onnx-am's own code is left alone: that is a bug, and it should surface as one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from onnx_am.errors import OnnxAmError, ResourceLimitError, one_line

_OWN_CODE = str(Path(__file__).resolve().parents[1])


def raised_by_dependency(exc: BaseException) -> bool:
    """Whether the innermost Python frame of ``exc``'s traceback lies outside onnx-am."""
    tb = exc.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    return not str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(_OWN_CODE)


def describe(exc: BaseException) -> str:
    """``Type: first words of the message``, on one line."""
    text = one_line(str(exc), 240) or "(no message)"
    return f"{type(exc).__name__}: {text}"


@contextlib.contextmanager
def foreign_errors(error: type[OnnxAmError], what: str) -> Iterator[None]:
    """Re-raise a dependency's exception as ``error("{what}: {Type}: {message}")``.

    ``MemoryError`` (an allocation the limits did not foresee) becomes a
    :class:`ResourceLimitError`.
    """
    try:
        yield
    except OnnxAmError:
        raise
    except MemoryError as exc:
        raise ResourceLimitError(f"{what}: out of memory") from exc
    except Exception as exc:
        if not raised_by_dependency(exc):
            raise
        raise error(one_line(f"{what}: {describe(exc)}")) from exc
