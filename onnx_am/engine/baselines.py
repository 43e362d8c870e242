"""What trivial inputs achieve: the bar activation maximization has to clear.

For every target: the all-upper image, the all-lower image, the mid-value image, and the
best of ``corners`` random corners of the box (every element at a random bound). All are
measured on the original network's forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from onnx_am.domain import InputDomain
from onnx_am.engine.results import TargetBaseline
from onnx_am.engine.starts import row_seed, simple_start
from onnx_am.objectives import Target

if TYPE_CHECKING:
    from onnx_am.importer.model import ImportedModel


def trivial_inputs(
    imported: ImportedModel, domain: InputDomain, corners: int = 16, seed: int = 0
) -> torch.Tensor:
    """Raw batch: upper, lower, mid, then ``corners`` random corners."""
    shape = imported.input.sample_shape
    generator = torch.Generator().manual_seed(row_seed(seed, "baselines", 0))
    kinds = ["upper", "lower", "mid"] + ["random_corner"] * corners
    return torch.stack([simple_start(kind, shape, domain, generator) for kind in kinds])


def trivial_baselines(
    imported: ImportedModel,
    targets: Sequence[Target],
    domain: InputDomain,
    corners: int = 16,
    seed: int = 0,
    device: str = "cpu",
) -> list[TargetBaseline]:
    """The activation of each trivial input, per target.

    Args:
        imported: the model (its unmodified torch graph is run).
        targets: the targets.
        domain: the input box and preprocessing.
        corners: how many random corners to try (the best one is kept).
        seed: seed of the corners.
        device: where to run.

    Returns:
        One :class:`TargetBaseline` per target, in order.
    """
    x = trivial_inputs(imported, domain, corners, seed).to(device)
    names = list(dict.fromkeys(t.tensor for t in targets))
    with torch.no_grad():
        values = dict(
            zip(names, imported.run(domain.to_model(x, imported.input), names), strict=True)
        )
    baselines = []
    for target in targets:
        row = target.value(values[target.tensor]).double().cpu()
        activations = {"upper": float(row[0]), "lower": float(row[1]), "mid": float(row[2])}
        if corners:
            activations["random_corners"] = float(row[3:].max())
        baselines.append(TargetBaseline(target.name, activations))
    return baselines
