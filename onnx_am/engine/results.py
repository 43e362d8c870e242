"""Result types of activation maximization: what the engine returns, what reports render.

Everything here is plain data (targets, numbers, strings, numpy arrays) so it can be written
to JSON (``to_dict``) and rendered without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnx_am.objectives import Target


@dataclass
class UnitResult:
    """The best input found for one (target unit, method), over its restarts.

    Attributes:
        target: the :class:`Target` that was maximized (the object the run was planned
            with; ``target.name`` is its canonical string, e.g. ``"conv3_out:12@4,4"``).
        method: the gradient method's label, e.g. ``"decoupled(0.3)"``.
        method_kind: ``"standard"``, ``"decoupled"``, ``"proxy"`` or ``"best"``.
        backward_slope: beta (``None`` for standard or schedules).
        activation: the objective on the original network's true forward (torch).
        activation_onnxruntime: the same, recomputed by onnxruntime on the unmodified model
            (``None`` when the cross-check was switched off).
        agrees: torch and onnxruntime agree within the report's tolerance.
        saturation: fraction of input elements at either domain bound.
        white: fraction of input elements at the upper bound.
        gain_over_standard: ``activation - standard activation`` for the same unit
            (``None`` when standard was not run).
        beats_trivial: the activation exceeds the best trivial input of the target.
        activation_transformed: with transformation robustness, the mean activation over
            random draws of the same transformations (:mod:`onnx_am.engine.robustness`);
            ``None`` without transformations.
        picked: for ``best``, the label of the method whose result it took (ties go to
            standard); ``None`` for other methods.
        best_restart: which restart produced ``image``.
        restart_activations: final activation of every restart.
        trace: per step, the best activation so far over restarts (true forward).
        steps_to_95: first step whose trace reaches 95 % of ``activation`` (``None`` if never,
            or if the run never left its start value).
        image: the best input in the model's own layout and domain, one sample (no batch).
    """

    target: Target
    method: str
    method_kind: str
    backward_slope: float | None
    activation: float
    activation_onnxruntime: float | None = None
    agrees: bool = True
    saturation: float = 0.0
    white: float = 0.0
    gain_over_standard: float | None = None
    beats_trivial: bool = True
    activation_transformed: float | None = None
    picked: str | None = None
    best_restart: int = 0
    restart_activations: list[float] = field(default_factory=list)
    trace: list[float] = field(default_factory=list)
    steps_to_95: int | None = None
    image: np.ndarray | None = field(default=None, repr=False)

    @property
    def tensor(self) -> str:
        """The ONNX tensor name."""
        return self.target.tensor

    @property
    def unit(self) -> int:
        """The unit index (class, channel or neuron channel)."""
        return self.target.unit

    @property
    def kind(self) -> str:
        """``"unit"``, ``"channel"``, ``"neuron"`` or ``"class"`` (see :class:`Target`)."""
        return self.target.kind

    def to_dict(self) -> dict:
        """The JSON form: the target as ``target`` (its name), ``tensor``, ``unit``, ``kind``,
        then every other field but the image."""
        target = {"target": self.target.name, "tensor": self.tensor, "unit": self.unit}
        rest = {k: v for k, v in self.__dict__.items() if k not in ("target", "image")}
        return {**target, "kind": self.kind, **rest}

    @classmethod
    def from_dict(cls, data: dict) -> UnitResult:
        """Rebuild a result (without image) from :meth:`to_dict`'s form.

        The target comes back as the same :class:`Target`: tensor, unit and kind are stored,
        and a neuron's position is what follows ``@`` in the name.
        """
        name, tensor, unit = data["target"], data["tensor"], int(data["unit"])
        _, _, position = name.partition(f"{tensor}:{unit}")[2].partition("@")
        neuron = position and data["kind"] == "neuron"  # a class target ends in "@last"
        spatial = tuple(int(p) for p in position.split(",")) if neuron else None
        target = Target(tensor, unit, data["kind"], spatial)
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "target"}
        return cls(target=target, **{k: v for k, v in fields.items() if k != "image"})


@dataclass
class TargetBaseline:
    """Activations of trivial inputs for one target; AM should beat the best of them.

    Attributes:
        target: canonical target string.
        activations: input name (``"upper"``, ``"lower"``, ``"mid"``, ``"random_corners"``)
            -> activation.
        best: the largest of them.
    """

    target: str
    activations: dict[str, float]

    @property
    def best(self) -> float:
        return max(self.activations.values())

    def to_dict(self) -> dict:
        return {"target": self.target, "activations": self.activations, "best": self.best}


@dataclass
class MaximizeReport:
    """Everything one call of :func:`onnx_am.engine.maximizer.maximize` found.

    Attributes:
        results: one per (target unit, method).
        baselines: one per target unit.
        settings: the configuration used (JSON-able).
        timings: seconds spent per phase (``optimize``, ``crosscheck``, ``baselines``).
        tolerance: relative tolerance of the onnxruntime cross-check.
        row_forwards: forward passes of the optimized rows (one per trace entry of every
            row, also of a race's candidates that stopped): what a pace divides the
            optimization's seconds by. None: not counted.
    """

    results: list[UnitResult]
    baselines: list[TargetBaseline]
    settings: dict
    timings: dict[str, float]
    tolerance: float
    row_forwards: int | None = None

    @property
    def disagreements(self) -> list[UnitResult]:
        return [r for r in self.results if not r.agrees]

    def to_dict(self) -> dict:
        return {
            "settings": self.settings,
            "timings": self.timings,
            "tolerance": self.tolerance,
            "results": [r.to_dict() for r in self.results],
            "baselines": [b.to_dict() for b in self.baselines],
        }
