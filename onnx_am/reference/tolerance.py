"""When a torch value agrees with onnxruntime's: the one rule of parity and of the cross-check.

``|torch - onnxruntime| <= tolerance * max(1, scale)``, where ``scale`` is the magnitude of
what onnxruntime computed: ``|value|`` for one activation (the cross-check of a result),
``max |output|`` over a whole output tensor (the parity check of the imported graph). The
tolerance is relative for values above 1 in magnitude and absolute below, so values near 0
(a dead unit, a probability) are not held to a relative bound that float32 cannot meet.
Non-finite differences or scales never agree.

``tolerance = 1e-4`` by default: float32 kernels of the two runtimes differ by about 1e-6
relative on the sample models; 1e-4 leaves room for deeper graphs while still catching a wrong
layout, slope or op. Quantized models allow at least one step of their integer type
(``2**-8`` for 8-bit; see :mod:`onnx_am.reference.quantized`).
"""

from __future__ import annotations

import math

#: The default tolerance of both checks.
DEFAULT_TOLERANCE = 1e-4


def allowed_difference(scale: float, tolerance: float = DEFAULT_TOLERANCE) -> float:
    """The largest ``|torch - onnxruntime|`` that agrees, for a reference of magnitude ``scale``."""
    return tolerance * max(1.0, scale)


def within_tolerance(difference: float, scale: float, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """Whether an absolute ``difference`` agrees at reference magnitude ``scale``.

    Args:
        difference: ``|torch - onnxruntime|`` (for a tensor: its largest element).
        scale: the magnitude of the onnxruntime value (for a tensor: ``max |output|``).
        tolerance: the relative tolerance (absolute below magnitude 1).

    Returns:
        ``False`` whenever ``difference`` or ``scale`` is not finite.
    """
    if not (math.isfinite(difference) and math.isfinite(scale)):
        return False
    return difference <= allowed_difference(abs(scale), tolerance)


def agrees(torch_value: float, reference: float, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """Whether one torch value agrees with the onnxruntime ``reference`` (see above)."""
    return within_tolerance(abs(torch_value - reference), abs(reference), tolerance)
