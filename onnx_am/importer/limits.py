"""Resource limits for untrusted models, stated once and checked before anything is spent.

A model file can ask for tensors of 2^62 elements, a Slice over axis 2^31 or a forward pass
that never ends. The limits here refuse what cannot be done, not what is large: a tensor
larger than the usable memory (physical memory, or the room an address-space limit leaves),
or a model whose weights and batch-2 activations together exceed it, is refused before torch
or onnxruntime allocate. The import probes and the parity check each run under a time limit
that follows the model's estimated work (:mod:`onnx_am.importer.cost`) with a wide margin,
and the end of a time budget (:class:`ProbeLimit`); how a model is batched never depends on
how long a probe took: a probe that runs out of time refuses the model, it never chooses.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

from onnx_am.errors import ResourceLimitError
from onnx_am.importer.cost import ForwardCost

#: Largest tensor rank (and absolute axis) a model may use; torch supports fewer than 64.
MAX_RANK = 32

#: Rows the import probes run at once (the batch probe's batch of 2).
PROBE_ROWS = 2

#: Seconds every probe may take, whatever the model's estimated work.
PROBE_FLOOR_SECONDS = 20.0
#: Operations per second a derived limit assumes, per-node work included (see
#: :data:`~onnx_am.importer.cost.NODE_FLOPS`). On the 2-core machine under a load of 9 the
#: imports and parity checks of a ResNet-50, ResNet-18, MobileNetV3-Large (224 px) and four
#: small CNNs took 1/16 to 1/130 of these limits (the closest: a 32-px MobileNetV2's parity
#: check, 4.3 s of 71 s), so a machine several times slower or busier still passes.
SLOW_FLOPS = 5e7
#: Forwards of one sample a probe may run: batches of 2 and 1 (and again for a rewritten
#: graph), parity at batches 1 and 4 in torch and in onnxruntime.
PROBE_FORWARDS = 10


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


def check_elements(elements: float, what: str) -> None:
    """Refuse a single tensor (4-byte elements) larger than the usable memory."""
    usable = usable_memory_bytes()
    if 4 * elements > usable:
        raise ResourceLimitError(
            f"{what} would have {elements:.3g} elements ({_gib(4 * elements)}), more than the "
            f"{_gib(usable)} of usable memory"
        )


def check_fits(cost: ForwardCost) -> None:
    """Refuse a model whose weights and activations at :data:`PROBE_ROWS` rows do not fit.

    The activations are every inferred tensor at batch 1 (an upper bound of what one row
    keeps for a backward pass), so a model that passes can run at least one row.
    """
    usable = usable_memory_bytes()
    activations = PROBE_ROWS * cost.activation_bytes
    needed = cost.weight_bytes + activations
    if needed > usable:
        raise ResourceLimitError(
            f"the model needs about {_gib(needed)} to import (weights {_gib(cost.weight_bytes)}"
            f" + activations at batch {PROBE_ROWS} {_gib(activations)}), more than the "
            f"{_gib(usable)} of usable memory: a machine with more memory, a higher "
            "address-space limit (ulimit -v) or a smaller --input-shape would fit it"
        )


def _gib(size: float) -> str:
    return f"{size / 2**30:.3g} GiB"


@dataclass(frozen=True)
class ProbeLimit:
    """How long each import probe and the parity check may run.

    Attributes:
        seconds: a fixed limit in seconds; None: derived from the model's estimated work
            (:meth:`derived`), at least :data:`PROBE_FLOOR_SECONDS`.
        off: no limit of its own (``--probe-timeout none``); a deadline still applies.
        deadline: a ``time.monotonic()`` value by which every probe must have ended (the end
            of the time budget), None: none.
        budget: the time budget the deadline ends, in seconds (named in the refusal).
    """

    seconds: float | None = None
    off: bool = False
    deadline: float | None = None
    budget: float | None = None

    def until(self, deadline: float | None, budget: float | None) -> ProbeLimit:
        """This limit, and no probe past ``deadline`` (the end of a ``budget``)."""
        return replace(self, deadline=deadline, budget=budget)

    @staticmethod
    def derived(cost: ForwardCost) -> float:
        """Seconds for a model of ``cost``: the floor plus :data:`PROBE_FORWARDS` forwards at
        :data:`SLOW_FLOPS`."""
        return PROBE_FLOOR_SECONDS + PROBE_FORWARDS * cost.flops / SLOW_FLOPS

    def bound(self, cost: ForwardCost) -> tuple[float | None, str]:
        """Seconds a probe may run from now (None: no limit), and why, for the refusal."""
        found: list[tuple[float, str]] = []
        if self.seconds is not None and not self.off:
            found.append((self.seconds, f"the --probe-timeout of {self.seconds:g} s"))
        elif not self.off:
            seconds = self.derived(cost)
            why = (
                f"{seconds:.0f} s (the limit for its estimated {cost.flops:.2g} operations per "
                "sample; --probe-timeout raises it, none removes it)"
            )
            found.append((seconds, why))
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            found.append((left, f"the --time-budget of {self.budget or 0:g} s (raise it)"))
        return min(found) if found else (None, "")


class _Expired(BaseException):
    """The alarm; a ``BaseException`` so that no ``except Exception`` on its way (a probe
    that treats any failure as "not batchable") can swallow it and go on another way."""


@contextlib.contextmanager
def time_limit(limit: ProbeLimit, cost: ForwardCost, what: str) -> Iterator[None]:
    """Raise :class:`ResourceLimitError` if the block runs longer than ``limit`` allows.

    Uses ``SIGALRM``, so it works in the main thread only (elsewhere it does nothing) and
    interrupts between Python steps, not inside one long native call. An outer alarm is
    left alone (no nesting).
    """
    seconds, why = limit.bound(cost)
    if seconds is not None and seconds <= 0:
        raise ResourceLimitError(f"{what} was not started: no time left of {why}")
    if (
        seconds is None
        or threading.current_thread() is not threading.main_thread()
        or signal.getitimer(signal.ITIMER_REAL)[0]
    ):
        yield
        return

    def expired(signum, frame):
        raise _Expired

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Expired:
        raise ResourceLimitError(f"{what} took longer than {why} (refused)") from None
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
