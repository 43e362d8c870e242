"""How a found input holds up under the transformations it was optimized through.

With transformation robustness (lucid / lucent: pad, jitter, scale, rotate) the gradient
forward sees a randomly transformed input at every step. The reported ``activation`` stays the
original network on the untransformed input, as everywhere in onnx-am; beside it,
``activation_transformed`` is the mean activation over :data:`SAMPLES` random draws of the same
transformations (seeded, so the same for every result of a run), which is what the
optimization actually pushed up. Both are shown; a large gap says the picture works only as
it is, pixel for pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from onnx_am.engine.config import AMConfig
from onnx_am.engine.regularizers import Regularizer
from onnx_am.engine.results import UnitResult
from onnx_am.engine.starts import row_seed
from onnx_am.importer.model import ImportedModel
from onnx_am.objectives import RowObjective

#: Random draws of the transformations per result.
SAMPLES = 16


def transforms_of(config: AMConfig) -> list[Regularizer]:
    """The regularizers of ``config`` that transform the model input (parsed objects)."""
    return [
        r
        for r in config.regularizers
        if isinstance(r, Regularizer) and type(r).transform is not Regularizer.transform
    ]


def measure_transformed(
    imported: ImportedModel, results: Sequence[UnitResult], config: AMConfig
) -> None:
    """Fill ``activation_transformed`` of every result, in place (no-op without transforms)."""
    transforms = transforms_of(config)
    if not transforms or not results:
        return
    names = list(dict.fromkeys(r.target.tensor for r in results))
    extractor = imported.extractor(names)
    objective = RowObjective([r.target for r in results])
    images = torch.stack([torch.from_numpy(r.image) for r in results])
    fed = config.domain.to_model(images, imported.input)
    total = torch.zeros(len(results), dtype=torch.float64)
    with torch.no_grad():
        for sample in range(SAMPLES):
            generator = torch.Generator().manual_seed(
                row_seed(config.starts.seed, "robustness", sample)
            )
            x = fed
            for transform in transforms:
                x = transform.transform(x, imported.input, generator)
            tensors = imported.batch.call(extractor, x)
            total += objective(dict(zip(names, tensors, strict=True))).double()
    for result, value in zip(results, (total / SAMPLES).tolist(), strict=True):
        result.activation_transformed = value
