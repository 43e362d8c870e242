"""onnxruntime on the model as loaded (before any cut), fed real int ids.

Every value a token search reports is recomputed here: the uncut model, the final ids in
its int input, every other input at the value the search used (or the cut's default for an
input only the cut made unnecessary), the target's tensor exposed as an output, at the
reference's optimization level (:mod:`onnx_am.reference.optimization`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnxruntime as ort
import torch

from onnx_am.importer.cut import Cut, default_int_value
from onnx_am.importer.feeds import Feed
from onnx_am.importer.input_spec import describe_value, graph_inputs
from onnx_am.objectives import Target
from onnx_am.reference.optimization import reference_level
from onnx_am.reference.runtime import expose_tensors


class IdsRuntime:
    """An onnxruntime session on ``cut.source`` that outputs ``tensors`` for a sequence of ids.

    Args:
        cut: the cut (its ``lookup`` names the ids input).
        feeds: the values of the cut model's other inputs (``ImportedModel.feeds``).
        tensors: the ONNX tensors the targets read.
    """

    def __init__(self, cut: Cut, feeds: Mapping[str, Feed], tensors: Sequence[str]):
        if cut.lookup is None:
            raise ValueError("the cut is not at an embedding lookup or one-hot")
        self.ids_input = cut.lookup.ids_input
        options = reference_level(cut.source).session_options()
        model = expose_tensors(cut.source, list(dict.fromkeys(tensors)))
        self.session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self.fixed: dict[str, np.ndarray] = {}
        self.ids_spec = None
        for value in graph_inputs(cut.source):
            spec = describe_value(value)
            if value.name == self.ids_input:
                self.ids_spec = spec
            elif value.name in feeds:
                self.fixed[value.name] = feeds[value.name].batch(1)
            else:
                shape = tuple(d if isinstance(d, int) else 1 for d in spec.shape)
                if len(shape) >= 2 and not isinstance(spec.shape[-1], int):
                    shape = (*shape[:-1], cut.seq_len)
                self.fixed[value.name] = default_int_value(value.name, shape, np.dtype(spec.dtype))[
                    0
                ]

    def run(self, ids: Sequence[int], tensors: Sequence[str]) -> dict[str, np.ndarray]:
        """The tensors for one sequence of ids (a batch of one)."""
        dtype = np.dtype(self.ids_spec.dtype)
        array = np.asarray(ids, dtype=dtype).reshape(1, -1)
        if len(self.ids_spec.shape) == 1:
            array = array.reshape(-1)
        values = self.session.run(list(tensors), {**self.fixed, self.ids_input: array})
        return dict(zip(tensors, values, strict=True))

    def value(self, target: Target, ids: Sequence[int]) -> float:
        """The target's value for the ids."""
        tensor = self.run(ids, [target.tensor])[target.tensor]
        return float(target.value(torch.from_numpy(np.asarray(tensor, dtype=np.float64)))[0])
