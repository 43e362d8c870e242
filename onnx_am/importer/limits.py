"""Resource limits for untrusted models, stated once and checked before anything is spent.

A model file can ask for tensors of 2^62 elements, a Slice over axis 2^31 or a forward pass
that never ends. The limits here are derived from the machine (its memory, or a smaller
address-space limit the process runs under) and checked before torch or onnxruntime
allocate; the wall-clock limit bounds the probes that run the converted graph on import.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import threading
from collections.abc import Iterator

from onnx_am.errors import ResourceLimitError

#: Largest tensor rank (and absolute axis) a model may use; torch supports fewer than 64.
MAX_RANK = 32

#: Share of the usable memory one tensor (at batch 1) may take.
TENSOR_SHARE = 1 / 16

#: Seconds the import probes (batch support) and the parity check may each run.
PROBE_SECONDS = 20.0


def usable_memory_bytes() -> int:
    """Physical memory, or the room left under ``RLIMIT_AS`` if the process has one."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        total = min(total, max(soft - _address_space_in_use(), 0))
    return total


def _address_space_in_use() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def max_tensor_elements() -> int:
    """The most elements (4-byte) one tensor of a model may have at batch 1."""
    return max(int(usable_memory_bytes() * TENSOR_SHARE) // 4, 2**20)


def check_elements(elements: float, what: str) -> None:
    """Raise :class:`ResourceLimitError` when ``what`` would hold too many elements."""
    limit = max_tensor_elements()
    if elements > limit:
        gib = usable_memory_bytes() / 2**30
        raise ResourceLimitError(
            f"{what} would have {elements:.3g} elements, more than the {limit:.3g} onnx-am "
            f"allows per tensor ({TENSOR_SHARE:g} of {gib:.1f} GiB usable memory)"
        )


@contextlib.contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise :class:`ResourceLimitError` if the block runs longer than ``seconds``.

    Uses ``SIGALRM``, so it works in the main thread only (elsewhere it does nothing) and
    interrupts between Python steps, not inside one long native call. An outer alarm is
    left alone (no nesting).
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getitimer(signal.ITIMER_REAL)[0]
    ):
        yield
        return

    def expired(signum, frame):
        raise ResourceLimitError(f"{what} took longer than {seconds:g} s (refused)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_shapes(shapes: dict[str, list[int]]) -> None:
    """Refuse any tensor (inferred at batch 1) above the rank or element limits."""
    for name, shape in shapes.items():
        if len(shape) > MAX_RANK:
            raise ResourceLimitError(f"tensor {name[:60]!r} has rank {len(shape)} > {MAX_RANK}")
        elements = 1.0
        for dim in shape:
            elements *= max(dim, 0)
        check_elements(elements, f"tensor {name[:60]!r} (shape {shape[:8]} at batch 1)")
