"""Does the torch graph compute what onnxruntime computes on the original model?"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from onnx_am.errors import ImportFailedError, shown
from onnx_am.importer.guard import foreign_errors
from onnx_am.importer.limits import ProbeLimit, time_limit
from onnx_am.importer.model import ImportedModel
from onnx_am.reference.optimization import FULL, reference_level
from onnx_am.reference.quantized import effective_tolerance
from onnx_am.reference.runtime import OnnxRuntimeRunner
from onnx_am.reference.tolerance import DEFAULT_TOLERANCE, within_tolerance


@dataclass
class OutputParity:
    """One output at one batch size.

    Attributes:
        batch: the batch size the inputs had.
        shapes: ``[torch shape, onnxruntime shape]``.
        nonfinite: ``[torch count, onnxruntime count]`` of NaN or infinite values.
        nonfinite_agree: the NaN and infinite values are the same, in the same places.
        agrees: same shape, non-finite values in the same places, finite ones within
            ``tolerance * max(1, max |output|)`` (:func:`~onnx_am.reference.tolerance.
            within_tolerance`, the cross-check's rule).
    """

    name: str
    max_abs_diff: float
    max_rel_diff: float
    output_scale: float
    batch: int = 0
    shapes: list[list[int]] = field(default_factory=list)
    nonfinite: list[int] = field(default_factory=lambda: [0, 0])
    agrees: bool = True
    nonfinite_agree: bool = True

    def problem(self) -> str:
        """Why this output disagrees, in a few words (empty when it agrees)."""
        where = f"output {shown(self.name)} at batch {self.batch}"
        if self.agrees:
            return ""
        if self.shapes and self.shapes[0] != self.shapes[1]:
            return f"{where}: shape {self.shapes[0]} in torch, {self.shapes[1]} in onnxruntime"
        if not self.nonfinite_agree:
            same = " (in different places or of different kinds)" * (
                self.nonfinite[0] == self.nonfinite[1]
            )
            return (
                f"{where}: NaN/Inf in {self.nonfinite[0]} value(s) in torch, "
                f"{self.nonfinite[1]} in onnxruntime{same}"
            )
        return f"{where}: max abs diff {self.max_abs_diff:.3g} (scale {self.output_scale:.3g})"


@dataclass
class ParityResult:
    """Agreement of torch and onnxruntime over random inputs, for every output.

    Attributes:
        max_abs_diff: the largest absolute difference over all outputs (finite values).
        max_rel_diff: the largest ``max_abs_diff / max |output|`` over all outputs.
        passed: every output agrees at every batch size (see :class:`OutputParity`).
        samples: the batch size checked besides batch 1.
        outputs: one entry per output and batch size.
        tolerance: the relative tolerance applied (raised for quantized models).
        tolerance_note: why the tolerance was raised above the one asked for, else empty.
        onnxruntime_optimization: the onnxruntime optimization level of the reference
            (``"all"`` or ``"basic"``, :mod:`onnx_am.reference.optimization`); the
            cross-check runs at the same.
        optimization_note: why it is not ``"all"``, else empty.
        full_optimization_max_abs_diff: with ``"basic"``: the largest difference of torch
            from onnxruntime at full optimization, as information (not checked).
    """

    max_abs_diff: float
    max_rel_diff: float
    passed: bool
    tolerance: float
    samples: int
    outputs: list[OutputParity] = field(default_factory=list)
    tolerance_note: str = ""
    onnxruntime_optimization: str = "all"
    optimization_note: str = ""
    full_optimization_max_abs_diff: float | None = None

    @classmethod
    def of(
        cls, per_output: list, tolerance: float, samples: int, note: str = "", **level
    ) -> ParityResult:
        """The result of comparing every output: the largest finite differences (all of
        them when none is finite), passed when every output agrees (``level``: the
        optimization fields)."""
        finite = [o for o in per_output if np.isfinite(o.max_abs_diff)] or per_output
        return cls(
            max_abs_diff=max(o.max_abs_diff for o in finite),
            max_rel_diff=max(o.max_rel_diff for o in finite),
            passed=all(o.agrees for o in per_output),
            tolerance=tolerance,
            samples=samples,
            outputs=per_output,
            tolerance_note=note,
            **level,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line: the first disagreement and how many outputs disagree."""
        bad = [o for o in self.outputs if not o.agrees]
        if not bad:
            return f"torch and onnxruntime agree (max abs diff {self.max_abs_diff:.3g})"
        more = f" (and {len(bad) - 1} more disagreement(s))" if len(bad) > 1 else ""
        return f"torch and onnxruntime disagree: {bad[0].problem()}{more}"


def check_parity(
    imported: ImportedModel,
    samples: int = 4,
    seed: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
    low: float = -1.0,
    high: float = 1.0,
    probe_limit: ProbeLimit | None = None,
) -> ParityResult:
    """Run torch and onnxruntime (on the unmodified model) on the same random inputs.

    The check runs at batch 1 and at batch ``samples`` (only at the declared batch when the
    graph fixes one above 1), and compares every output's shape, where its NaN and infinite
    values are, and its finite values.

    Args:
        imported: the imported model.
        samples: the batch size besides 1 (the batch size activation maximization uses).
        seed: seed of the inputs.
        tolerance: allowed max abs diff relative to the output's max magnitude (absolute
            below 1, see :mod:`onnx_am.reference.tolerance`); a quantized
            model allows at least one step of its integer type (see
            :mod:`onnx_am.reference.quantized`).
        probe_limit: how long the check may run (default: the import's limit).

    Raises:
        ImportFailedError: the torch graph fails on the inputs.
        ModelLoadError: onnxruntime cannot load or run the model.
        ResourceLimitError: the check ran longer than ``probe_limit`` allows.
    """
    tolerance, note = effective_tolerance(imported.original, tolerance)
    generator = torch.Generator().manual_seed(seed)
    x = (
        torch.rand((samples, *imported.input.sample_shape), generator=generator) * (high - low)
        + low
    )
    limit = probe_limit or imported.probe_limit
    level = reference_level(imported.original)
    with time_limit(limit, imported.cost, "the parity check"):
        runner = OnnxRuntimeRunner(
            imported.original,
            imported.input.name,
            rowwise=imported.batch.mode == "rowwise",
            feeds=imported.feeds,
            level=level,
        )
        batches = sorted({1, samples})
        if runner.fixed_batch is not None and runner.fixed_batch > 1:
            # onnxruntime refuses any other batch of a graph declared with one fixed batch
            batches = [b for b in batches if b == runner.fixed_batch] or [samples]
        per_output = []
        for batch in batches:
            per_output += _check_batch(imported, runner, x[:batch], tolerance)
        full = None
        if level != FULL:  # the deviation onnxruntime's default would show, as information
            runner = OnnxRuntimeRunner(
                imported.original,
                imported.input.name,
                rowwise=imported.batch.mode == "rowwise",
                feeds=imported.feeds,
            )
            compared = _check_batch(imported, runner, x[: batches[-1]], tolerance)
            full = max(o.max_abs_diff for o in compared)
    return ParityResult.of(
        per_output, tolerance, samples, note, onnxruntime_optimization=level.name,
        optimization_note=level.reason, full_optimization_max_abs_diff=full,
    )  # fmt: skip


def _check_batch(
    imported: ImportedModel, runner: OnnxRuntimeRunner, x: torch.Tensor, tolerance: float
) -> list[OutputParity]:
    with foreign_errors(ImportFailedError, f"the converted torch graph fails at batch {len(x)}"):
        with torch.no_grad():
            torch_outputs = imported.run(x)
    reference = runner.run(x.numpy(), imported.output_names)
    return [
        _compare(name, got, reference[name], len(x), tolerance)
        for name, got in zip(imported.output_names, torch_outputs, strict=True)
    ]


def _compare(
    name: str, got: torch.Tensor, want: np.ndarray, batch: int, tolerance: float
) -> OutputParity:
    got = got.detach().double().numpy()
    want = np.asarray(want).astype(np.float64)
    shapes = [list(got.shape), list(want.shape)]
    if got.shape != want.shape:
        return OutputParity(name, float("inf"), float("inf"), 0.0, batch, shapes, agrees=False)
    bad_got, bad_want = ~np.isfinite(got), ~np.isfinite(want)
    nonfinite = [int(bad_got.sum()), int(bad_want.sum())]
    same_places = bool((bad_got == bad_want).all())
    if same_places and bad_got.any():
        a, b = got[bad_got], want[bad_want]
        same_places = bool(((a == b) | (np.isnan(a) & np.isnan(b))).all())
    finite = ~(bad_got | bad_want)
    diff = float(np.abs(got[finite] - want[finite]).max()) if finite.any() else 0.0
    scale = float(np.abs(want[finite]).max()) if finite.any() else 0.0
    agrees = same_places and within_tolerance(diff, scale, tolerance)
    return OutputParity(
        name, diff, diff / scale if scale else diff, scale, batch, shapes, nonfinite, agrees,
        same_places,
    )  # fmt: skip
