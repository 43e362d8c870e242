"""Does the torch graph compute what onnxruntime computes on the original model?"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from onnx_am.errors import ImportFailedError
from onnx_am.importer.model import ImportedModel
from onnx_am.reference.quantized import effective_tolerance
from onnx_am.reference.runtime import OnnxRuntimeRunner
from onnx_am.reference.tolerance import DEFAULT_TOLERANCE, within_tolerance


@dataclass
class OutputParity:
    name: str
    max_abs_diff: float
    max_rel_diff: float
    output_scale: float


@dataclass
class ParityResult:
    """Agreement of torch and onnxruntime over random inputs, for every output.

    Attributes:
        max_abs_diff: the largest absolute difference over all outputs.
        max_rel_diff: the largest ``max_abs_diff / max |output|`` over all outputs.
        passed: every output's max abs diff is within ``tolerance * max(1, max |output|)``
            (:func:`~onnx_am.reference.tolerance.within_tolerance`, the cross-check's rule).
        tolerance: the relative tolerance applied (raised for quantized models).
        tolerance_note: why the tolerance was raised above the one asked for, else empty.
    """

    max_abs_diff: float
    max_rel_diff: float
    passed: bool
    tolerance: float
    samples: int
    outputs: list[OutputParity] = field(default_factory=list)
    tolerance_note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def check_parity(
    imported: ImportedModel,
    samples: int = 4,
    seed: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
    low: float = -1.0,
    high: float = 1.0,
) -> ParityResult:
    """Run torch and onnxruntime (on the unmodified model) on the same random inputs.

    Args:
        imported: the imported model.
        samples: how many random inputs, drawn uniformly from ``[low, high]``.
        seed: seed of the inputs.
        tolerance: allowed max abs diff relative to the output's max magnitude (absolute
            below 1, see :mod:`onnx_am.reference.tolerance`); a quantized
            model allows at least one step of its integer type (see
            :mod:`onnx_am.reference.quantized`).
    """
    tolerance, note = effective_tolerance(imported.original, tolerance)
    generator = torch.Generator().manual_seed(seed)
    x = (
        torch.rand((samples, *imported.input.sample_shape), generator=generator) * (high - low)
        + low
    )
    try:
        with torch.no_grad():
            torch_outputs = imported.run(x)
    except RuntimeError as exc:
        raise ImportFailedError(
            f"the converted torch graph fails on an input of shape {list(x.shape)}: "
            f"{(str(exc).splitlines() or [''])[0]}"
        ) from exc
    runner = OnnxRuntimeRunner(
        imported.original,
        imported.input.name,
        rowwise=imported.batch.mode == "rowwise",
        feeds=imported.feeds,
    )
    reference = runner.run(x.numpy(), imported.output_names)
    per_output = [
        _compare(name, got.detach().double().numpy(), reference[name].astype(np.float64))
        for name, got in zip(imported.output_names, torch_outputs, strict=True)
    ]
    passed = all(within_tolerance(o.max_abs_diff, o.output_scale, tolerance) for o in per_output)
    return ParityResult(
        max_abs_diff=max(o.max_abs_diff for o in per_output),
        max_rel_diff=max(o.max_rel_diff for o in per_output),
        passed=passed,
        tolerance=tolerance,
        samples=samples,
        outputs=per_output,
        tolerance_note=note,
    )


def _compare(name: str, got: np.ndarray, want: np.ndarray) -> OutputParity:
    if got.shape != want.shape:
        return OutputParity(name, float("inf"), float("inf"), 0.0)
    diff = float(np.abs(got - want).max()) if want.size else 0.0
    scale = float(np.abs(want).max()) if want.size else 0.0
    return OutputParity(name, diff, diff / scale if scale else diff, scale)
