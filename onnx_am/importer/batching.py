"""Run batches of inputs through models that may have been exported for batch 1 only.

Activation maximization feeds many inputs at once. Some exporters hard-code the batch size
(``Reshape`` to ``[1, -1]``). ``decide_batching`` finds out how a model copes with a batch:

- ``dynamic``: the graph handles any batch as it is;
- ``rewritten``: constant batch-1 ``Reshape`` shapes were rewritten to copy the batch dim,
  and the rewritten graph was verified against the original;
- ``rowwise``: neither works; rows are run one at a time (slower, still correct).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx2torch
import torch
from onnx import numpy_helper
from torch import fx

from onnx_am.errors import ImportFailedError
from onnx_am.importer.converters.control_flow import converting
from onnx_am.importer.module_names import legal_module_names


@dataclass(frozen=True)
class BatchSupport:
    """How a batch is run; ``call`` applies an extractor to a batch accordingly."""

    mode: str
    note: str = ""

    @classmethod
    def dynamic(cls) -> BatchSupport:
        return cls("dynamic", "the graph accepts any batch size")

    def call(self, extractor: fx.GraphModule, x: torch.Tensor) -> list[torch.Tensor]:
        if self.mode != "rowwise":
            return list(extractor(x))
        rows = [extractor(x[i : i + 1]) for i in range(x.shape[0])]
        return [join_rows([row[k] for row in rows]) for k in range(len(rows[0]))]


@dataclass(frozen=True)
class BatchDecision:
    """What :func:`decide_batching` found; the importer builds the model from it.

    Attributes:
        support: how batches are run.
        prepared: the rewritten ONNX model when ``support.mode == "rewritten"``, else ``None``.
        module: its conversion (verified against the original at batch 1), else ``None``.
        note: a pre-pass note to record when the model was rewritten, else empty.
    """

    support: BatchSupport
    prepared: onnx.ModelProto | None = None
    module: fx.GraphModule | None = None
    note: str = ""


def join_rows(rows: list[Any]) -> Any:
    """One batch from the results of running rows one at a time (torch or numpy arrays).

    A row's result that holds one row (leading dim 1) is concatenated along axis 0; any
    other (a scalar, or a result declared ``[batch]`` that returns ``[2]`` per row) is one
    row as a whole, so the rows are stacked on a new axis 0. onnxruntime's rows are joined
    by this same rule (:mod:`onnx_am.reference.runtime`), so unit ``k`` of row ``i`` is the
    same element on both sides, whatever shape the model declared.
    """
    first = rows[0]
    numpy = isinstance(first, np.ndarray)
    if first.ndim >= 1 and all(row.shape[0] == 1 for row in rows):
        return np.concatenate(rows) if numpy else torch.cat(rows)
    return np.stack(rows) if numpy else torch.stack(rows)


def decide_batching(
    module: fx.GraphModule,
    prepared: onnx.ModelProto,
    sample_shape: Sequence[int],
    batch_dim: str | None = None,
    deciding: Sequence[str] = (),
) -> BatchDecision:
    """How batches of inputs of ``sample_shape`` (one sample, no batch dim) run through a graph.

    Args:
        module: the converted graph of ``prepared``.
        prepared: the ONNX model it was converted from; a rewritten copy may be proposed.
        sample_shape: the shape of one input sample.
        batch_dim: the optimized input's symbolic batch dim; an output declared with it at
            another axis than 0 (a recurrent state ``[2, batch, 128]``) holds its rows there.
        deciding: nodes that take one value for the whole batch computed from the input
            (``If`` / ``Loop`` decisions, ``Clip`` bounds: see
            :mod:`onnx_am.importer.control_flow`), so rows run one at a time and each row
            decides for itself.

    Returns:
        ``dynamic`` when the graph handles batches as it is; ``rewritten`` with the rewritten
        model and its conversion when rewriting constant batch-1 Reshape shapes makes it so;
        else ``rowwise``.

    Raises:
        ImportFailedError: the graph cannot even run one sample.
    """
    if deciding:
        _check_runs(module, sample_shape)
        names = ", ".join(repr(name) for name in deciding)
        return BatchDecision(
            BatchSupport(
                "rowwise",
                f"{names} take(s) one value for the whole batch, computed from the input: "
                "rows run one at a time, each with its own",
            )
        )
    axes = row_axes(prepared, batch_dim)
    if _handles_batches(module, sample_shape, axes):
        return BatchDecision(BatchSupport.dynamic())
    rewritten, count = rewrite_fixed_batch(prepared)
    if count:
        candidate = _convert_quietly(rewritten)
        if (
            candidate is not None
            and _same_at_batch_one(candidate, module, sample_shape)
            and _handles_batches(candidate, sample_shape, axes)
        ):
            return BatchDecision(
                BatchSupport("rewritten", f"{count} constant batch-1 Reshape shape(s) rewritten"),
                prepared=rewritten,
                module=candidate,
                note=f"rewrote {count} fixed batch-1 Reshape shape(s) to copy the batch dim",
            )
    _check_runs(module, sample_shape)
    return BatchDecision(
        BatchSupport("rowwise", "the graph only accepts batch 1; rows run one at a time")
    )


def _check_runs(module: fx.GraphModule, sample_shape: Sequence[int]) -> None:
    """Raise a clear error when the converted graph cannot even run one sample."""
    x = _probe(sample_shape, 1)
    try:
        _outputs(module, x)
    except Exception as exc:  # noqa: BLE001 - any failure here is a failed import
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ImportFailedError(
            f"the converted graph fails on an input of shape {list(x.shape)}: {first}"
        ) from exc


def rewrite_fixed_batch(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Copy of ``model`` where constant Reshape shapes ``[1, ...]`` become ``[0, ...]``."""
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    initializers = {tensor.name: tensor for tensor in model_copy.graph.initializer}
    users = {}
    for node in model_copy.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    count = 0
    for node in model_copy.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        if any(a.name == "allowzero" and a.i for a in node.attribute):
            continue
        shape = numpy_helper.to_array(initializers[node.input[1]]).copy()
        if shape.ndim != 1 or shape.size < 2 or shape[0] != 1 or users[node.input[1]] != 1:
            continue
        shape[0] = 0
        initializers[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
        count += 1
    return model_copy, count


def _convert_quietly(model: onnx.ModelProto) -> fx.GraphModule | None:
    try:
        with legal_module_names(), converting(model):
            module = onnx2torch.convert(model, attach_onnx_mapping=True)
    except Exception:  # noqa: BLE001 - any failure means "cannot rewrite"
        return None
    module.eval()
    for tensor in [*module.parameters(), *module.buffers()]:
        tensor.requires_grad_(False)
    return module


def _probe(sample_shape: Sequence[int], batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((batch, *sample_shape), generator=generator) * 2 - 1


def _outputs(module: fx.GraphModule, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.inference_mode():
        out = module(x)
    return list(out) if isinstance(out, tuple | list) else [out]


def row_axes(model: onnx.ModelProto, batch_dim: str | None) -> list[int]:
    """Per graph output, the axis its rows lie along: where it is declared with ``batch_dim``.

    0 when the output does not name the batch dim (the usual layout).
    """
    axes = []
    for value in model.graph.output:
        dims = [d.dim_param for d in value.type.tensor_type.shape.dim]
        axes.append(dims.index(batch_dim) if batch_dim and batch_dim in dims else 0)
    return axes


def _handles_batches(
    module: fx.GraphModule, sample_shape: Sequence[int], axes: Sequence[int] = ()
) -> bool:
    """Whether a batch of 2 gives two rows, each equal to running it alone.

    A graph that hard-codes batch 1 or mixes rows fails the shape check or the comparison
    of a row. Both rows are compared: a graph that mixes rows through a batch-wide value
    (``Clip(x, ReduceMax(x) - 80)``, an ``If`` on a batch-wide score) gives the right
    answer for the row that holds that value, and only the other row shows the mixing.
    Output ``k`` holds its rows along ``axes[k]`` (0 when not given).
    """
    x = _probe(sample_shape, 2)
    try:
        together = _outputs(module, x)
        alone = [_outputs(module, x[i : i + 1]) for i in range(2)]
    except Exception:  # noqa: BLE001 - a failing batch run means "not batchable"
        return False
    for i, rows in enumerate(alone):
        for k, (value, row) in enumerate(zip(together, rows, strict=True)):
            axis = axes[k] if k < len(axes) else 0
            if not _rows_along(value, row, axis):
                return False
            if not _close(value.narrow(axis, i, 1), row):
                return False
    return True


def _rows_along(together: torch.Tensor, alone: torch.Tensor, axis: int) -> bool:
    """Whether ``together`` is 2 rows along ``axis`` where ``alone`` is 1, all else equal."""
    if not isinstance(together, torch.Tensor) or not isinstance(alone, torch.Tensor):
        return False
    if together.dim() == 0 or together.dim() != alone.dim() or axis >= together.dim():
        return False
    expected = list(alone.shape)
    expected[axis] = 2
    return alone.shape[axis] == 1 and list(together.shape) == expected


def _same_at_batch_one(
    candidate: fx.GraphModule, module: fx.GraphModule, sample_shape: Sequence[int]
) -> bool:
    x = _probe(sample_shape, 1, seed=1)
    try:
        new, old = _outputs(candidate, x), _outputs(module, x)
    except Exception:  # noqa: BLE001
        return False
    return len(new) == len(old) and all(
        a.shape == b.shape and _close(a, b) for a, b in zip(new, old, strict=True)
    )


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal within tolerance; NaN and infinities must sit in the same places."""
    if not a.is_floating_point():
        return torch.equal(a, b)
    finite = b[torch.isfinite(b)]
    scale = float(finite.abs().max()) if finite.numel() else 1.0
    atol = 1e-5 * max(scale, 1.0)
    return bool(torch.allclose(a, b, rtol=1e-4, atol=atol, equal_nan=True))
