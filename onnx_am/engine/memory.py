"""How many rows fit in memory: the engine's automatic batch size.

One optimization step is a batched forward and backward; what grows with the rows of a batch
is what autograd keeps from the forward for the backward (every rectifier's input, every
conv's input, ...), plus a few input-sized buffers per row (the optimized input, its
gradient, the best input so far, Adam's moments). :func:`activation_bytes_per_row` measures
the first with ``torch.autograd.graph.saved_tensors_hooks`` during one forward of a batch of
one, :func:`memory_budget` says how many bytes the batch may take, and
:func:`auto_batch_size` divides. Results do not depend on the batch size (every start is
seeded by ``(seed, target, restart)``), so the choice only trades speed for memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

from onnx_am.errors import OnnxAmError

#: Share of the host's total memory (``MemTotal``, or the cgroup's limit if lower) one batch
#: may use on the CPU. A quarter leaves room for the model, the onnxruntime cross-check, the
#: results kept so far and whatever else runs on the machine. The budget is taken from the
#: *total*, not from what happens to be free: the batch size then stays the same on every run
#: on one machine, and so do the numbers (a batch's composition changes results in the last
#: bits, through the kernels torch picks).
CPU_FRACTION = 0.25
#: Share of the GPU's *free* memory one batch may use; the weights are already on the device.
#: On a GPU the batch follows what is free when the call starts (other processes may hold
#: memory there, and batched GPU kernels are not bitwise reproducible anyway).
CUDA_FRACTION = 0.7
#: Budget when the total memory cannot be read (no ``/proc/meminfo``).
FALLBACK_BUDGET = 2 * 1024**3
#: Peak memory of a step over the measured saved bytes: the backward's transient gradients
#: (about as large as the biggest layers), the no-grad forward that measures true values,
#: and allocator slack.
SAFETY = 2.0
#: Input-sized buffers kept per row besides the saved activations: the optimized variable,
#: the raw and the preprocessed input, the gradient, the best input so far, the image the
#: value belongs to, and Adam's two moments.
INPUT_BUFFERS = 8
#: Most rows per batch: the batch of the fixed-size engine, beyond which batching gains
#: little on a CPU.
MAX_BATCH = 64
#: Most rows per batch on a GPU, which needs large batches to be busy.
MAX_BATCH_CUDA = 1024


def max_batch(device: str | torch.device = "cpu") -> int:
    """The most rows per batch on ``device`` (:data:`MAX_BATCH` or :data:`MAX_BATCH_CUDA`)."""
    return MAX_BATCH_CUDA if torch.device(device).type == "cuda" else MAX_BATCH


def activation_bytes_per_row(
    extractor: Callable[[torch.Tensor], object],
    sample_shape: Sequence[int],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    rows: int = 1,
    context: Callable[[], AbstractContextManager] | None = None,
) -> int:
    """Bytes one row adds to a step: what autograd saves for backward, plus input buffers.

    Runs one forward of a zero batch of ``rows`` that requires grad, recording every tensor
    autograd saves; each storage counts once, and the storages of the extractor's parameters
    and buffers (the weights, shared by all rows) not at all. No backward is run.

    Args:
        extractor: the network, called on ``[rows, *sample_shape]``; an ``nn.Module`` lets
            its weights be left out.
        sample_shape: one sample's shape (no batch dimension).
        device: where the forward runs.
        dtype: the input's dtype.
        rows: rows of the measured batch (1 unless ``context`` needs one row per method).
        context: makes the context the forward runs in, e.g. the slope control's rows for
            one row of each gradient method (a batch mixing proxy and decoupled rows saves
            both rectifier paths: up to 2.4 times a standard row's bytes on a small CNN).

    Returns:
        Saved bytes of the forward per row plus :data:`INPUT_BUFFERS` copies of one sample.
    """
    weights = set()
    if isinstance(extractor, torch.nn.Module):
        tensors = [*extractor.parameters(), *extractor.buffers()]
        weights = {t.untyped_storage().data_ptr() for t in tensors}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    x = torch.zeros((rows, *sample_shape), dtype=dtype, device=device, requires_grad=True)
    with (
        torch.enable_grad(),
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        context() if context is not None else nullcontext(),
    ):
        outputs = extractor(x)
    del outputs  # the graph and everything it saved go with it
    return (sum(saved.values()) + INPUT_BUFFERS * x.numel() * x.element_size()) // rows


def memory_budget(device: str | torch.device = "cpu") -> int:
    """Bytes one batch may use on ``device``: a fixed fraction of its total memory.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns:
        :data:`CPU_FRACTION` of the host memory (:data:`FALLBACK_BUDGET` when it cannot be
        read), or :data:`CUDA_FRACTION` of the device's free memory.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(CUDA_FRACTION * free)
    total = _host_total()
    return FALLBACK_BUDGET if total is None else int(CPU_FRACTION * total)


def auto_batch_size(
    bytes_per_row: int, budget: int, cap: int = MAX_BATCH, safety: float = SAFETY
) -> int:
    """Rows per batch: ``budget // (bytes_per_row * safety)``, clamped to ``1 .. cap``.

    Args:
        bytes_per_row: from :func:`activation_bytes_per_row`.
        budget: from :func:`memory_budget`.
        cap: the most rows per batch.
        safety: peak over measured bytes (:data:`SAFETY`).

    Returns:
        The batch size; ``cap`` when a row costs nothing measurable.

    Raises:
        OnnxAmError: a negative size or budget, or a cap or safety below one.
    """
    if bytes_per_row < 0 or budget < 0 or cap < 1 or safety < 1:
        raise OnnxAmError(
            f"auto_batch_size needs bytes_per_row >= 0, budget >= 0, cap >= 1 and safety >= 1; "
            f"got {bytes_per_row}, {budget}, {cap}, {safety}"
        )
    if bytes_per_row == 0:
        return cap
    return max(1, min(cap, int(budget // (bytes_per_row * safety))))


def choose_batch_size(
    extractor: Callable[[torch.Tensor], object],
    sample_shape: Sequence[int],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    rows: int = 1,
    context: Callable[[], AbstractContextManager] | None = None,
    cap: int = MAX_BATCH,
) -> int:
    """:func:`auto_batch_size` of the measured row size (:func:`activation_bytes_per_row`,
    same arguments) and the current :func:`memory_budget`."""
    per_row = activation_bytes_per_row(
        extractor, sample_shape, device, dtype, rows=rows, context=context
    )
    return auto_batch_size(per_row, memory_budget(device), cap)


def _host_total() -> int | None:
    """``MemTotal`` in bytes, lowered to a cgroup v2 memory limit; None if unknown."""
    total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    limit = _cgroup_limit()
    if total is not None and limit is not None:
        return min(total, limit)
    return total


def _cgroup_limit() -> int | None:
    """``memory.max`` of this cgroup (v2), or None without a limit."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        return None if limit == "max" else int(limit)
    except (OSError, ValueError):
        return None


__all__ = [
    "CPU_FRACTION",
    "CUDA_FRACTION",
    "FALLBACK_BUDGET",
    "INPUT_BUFFERS",
    "MAX_BATCH",
    "MAX_BATCH_CUDA",
    "SAFETY",
    "activation_bytes_per_row",
    "auto_batch_size",
    "choose_batch_size",
    "max_batch",
    "memory_budget",
]
