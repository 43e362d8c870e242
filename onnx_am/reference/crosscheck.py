"""Recompute every final activation with onnxruntime on the original, unmodified model.

The best input of each result is converted exactly as the torch graph saw it (the domain's
normalisation, the model's own layout and dtype) and run by onnxruntime with the target
tensors exposed as extra outputs; the objective is then computed from the onnxruntime
tensor by the same :meth:`Target.value` code.

Agreement: ``|torch - onnxruntime| <= tolerance * max(1, |onnxruntime|)``, the rule of
:mod:`onnx_am.reference.tolerance` that the parity check uses as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from onnx_am.domain import InputDomain
from onnx_am.objectives import Target
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
        imported.original, imported.input.name, extra_outputs=names, feeds=imported.feeds
    )
    fed = domain.to_model(images.detach().cpu(), imported.input).numpy()
    if imported.batch.mode == "dynamic":
        outputs = runner.run(fed, names)
    else:
        rows = [runner.run(fed[i : i + 1], names) for i in range(len(fed))]
        outputs = {name: np.concatenate([row[name] for row in rows]) for name in names}
    values = np.empty(len(targets))
    for i, target in enumerate(targets):
        tensor = torch.from_numpy(np.ascontiguousarray(outputs[target.tensor][i : i + 1]))
        values[i] = float(target.value(tensor.double())[0])
    return values


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
