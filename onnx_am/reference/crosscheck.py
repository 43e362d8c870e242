"""Recompute every final activation with onnxruntime on the original, unmodified model.

The best input of each result is converted exactly as the torch graph saw it (the domain's
normalisation, the model's own layout and dtype) and run by onnxruntime with the target
tensors exposed as extra outputs; the objective is then computed from the onnxruntime
tensor by the same :meth:`Target.value` code.

Agreement: ``|torch - onnxruntime| <= tolerance * max(1, |onnxruntime|)``, the rule of
:mod:`onnx_am.reference.tolerance` that the parity check uses as well, at the parity check's
optimization level (:mod:`onnx_am.reference.optimization`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from onnx_am.domain import InputDomain
from onnx_am.errors import TargetError, shown
from onnx_am.objectives import Target
from onnx_am.reference.optimization import reference_level
from onnx_am.reference.quantized import effective_tolerance
from onnx_am.reference.runtime import OnnxRuntimeRunner
from onnx_am.reference.tolerance import DEFAULT_TOLERANCE, agrees

if TYPE_CHECKING:
    from onnx_am.importer.model import ImportedModel


@dataclass(frozen=True)
class CrossCheck:
    """One recomputed activation: the onnxruntime value and whether it agrees with torch."""

    value: float
    agrees: bool


def onnxruntime_values(
    imported: ImportedModel, targets: Sequence[Target], images: torch.Tensor, domain: InputDomain
) -> np.ndarray:
    """The objective of ``targets[i]`` on raw image ``images[i]``, computed by onnxruntime."""
    names = list(dict.fromkeys(t.tensor for t in targets))
    runner = OnnxRuntimeRunner(
        imported.original,
        imported.input.name,
        extra_outputs=names,
        rowwise=imported.batch.mode != "dynamic",
        feeds=imported.feeds,
        level=reference_level(imported.original),
    )
    fed = domain.to_model(images.detach().cpu(), imported.input).numpy()
    outputs = runner.run(fed, names)
    values = np.empty(len(targets))
    for i, target in enumerate(targets):
        tensor = torch.from_numpy(np.ascontiguousarray(_row(outputs, target.tensor, i, len(fed))))
        values[i] = float(target.value(tensor.double())[0])
    return values


def _row(outputs: dict[str, np.ndarray], name: str, row: int, rows: int) -> np.ndarray:
    """Row ``row`` of onnxruntime's tensor ``name``, read from the shape it returned.

    The rows are joined as the torch side joins them (by the same rule), so row ``i`` of a
    tensor is its slice ``i`` along axis 0; a tensor whose returned leading dim is not the
    number of rows cannot be mapped to rows, and is refused rather than read at a guess.

    Raises:
        TargetError: the returned shape does not hold one slice per row.
    """
    tensor = outputs[name]
    if tensor.ndim == 0 or tensor.shape[0] != rows:
        raise TargetError(
            f"cannot map units of {shown(name)} to onnxruntime's output: it returned shape "
            f"{list(tensor.shape)} for {rows} input row(s), not one slice per row"
        )
    return tensor[row : row + 1]


def crosscheck(
    imported: ImportedModel,
    targets: Sequence[Target],
    images: torch.Tensor,
    torch_values: Sequence[float],
    domain: InputDomain,
    tolerance: float = DEFAULT_TOLERANCE,
) -> list[CrossCheck]:
    """Recompute with onnxruntime and compare with the torch activations, row by row."""
    if not len(targets):
        return []
    tolerance, _ = effective_tolerance(imported.original, tolerance)
    reference = onnxruntime_values(imported, targets, images, domain)
    return [
        CrossCheck(float(ref), agrees(float(value), float(ref), tolerance))
        for value, ref in zip(torch_values, reference, strict=True)
    ]
