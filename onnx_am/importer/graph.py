"""Convert a whole ONNX graph, every input an argument, whatever its dtype.

:func:`import_onnx` needs one float input to optimize. Models whose inputs are all discrete
(token ids, bytes, masks) are converted here instead: the same loading, pre-passes and
converters, but no input is singled out; the torch module takes every graph input that is
not fed, in graph order. Used by the parity checks of such models
(:func:`onnx_am.reference.graph_parity.check_graph_parity`) and as the base for starting a
search at an inner tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from torch import fx

from onnx_am.errors import ImportFailedError, InputSpecError, shown
from onnx_am.importer.guard import foreign_errors
from onnx_am.importer.loading import ModelSource, load_model
from onnx_am.importer.model import _convert
from onnx_am.importer.prepare import prepare_model
from onnx_am.importer.tensor_map import TensorLocation, build_tensor_map, extract_tensors


@dataclass(frozen=True)
class ConvertedGraph:
    """An ONNX model and its torch twin taking every unfed graph input.

    Attributes:
        original: the model as loaded, never modified (onnxruntime runs this one).
        prepared: the model after the pre-passes (fed inputs are initializers in it).
        module: the onnx2torch graph, eval mode, parameters frozen.
        input_names: the module's arguments, in graph order.
        output_names: the graph outputs, in order.
        feeds: the fed inputs' values (onnxruntime is given them too).
        notes: what the pre-passes changed, one line each.
        tensor_map: ONNX tensor name -> where the torch graph produces it.
        node_names: torch module name -> ONNX node name.
    """

    original: onnx.ModelProto
    prepared: onnx.ModelProto
    module: fx.GraphModule
    input_names: list[str]
    output_names: list[str]
    feeds: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tensor_map: dict[str, TensorLocation] = field(default_factory=dict)
    node_names: dict[str, str] = field(default_factory=dict)

    def extractor(self, names: list[str]) -> fx.GraphModule:
        """A graph module taking :attr:`input_names` (positional) and returning the named
        ONNX tensors (a tuple); only what they depend on is computed.

        Raises:
            TargetError: a name is not an ONNX tensor of the model.
        """
        return extract_tensors(self.module, self.tensor_map, names)

    def run(
        self, inputs: Mapping[str, np.ndarray | torch.Tensor], names: list[str] | None = None
    ) -> list[torch.Tensor]:
        """The graph outputs (or the named ONNX tensors) for ``inputs`` (every name of
        :attr:`input_names`).

        Raises:
            InputSpecError: an input is missing or unknown.
            TargetError: a name is not an ONNX tensor of the model.
        """
        missing = [name for name in self.input_names if name not in inputs]
        unknown = [name for name in inputs if name not in self.input_names]
        if missing or unknown:
            raise InputSpecError(
                f"inputs expected: {', '.join(map(shown, self.input_names))}; "
                f"missing {missing or 'none'}, unknown {unknown or 'none'}"
            )
        args = [torch.as_tensor(np.asarray(inputs[name])) for name in self.input_names]
        outputs = self.extractor(names)(*args) if names else self.module(*args)
        return list(outputs) if isinstance(outputs, tuple | list) else [outputs]


def convert_graph(
    source: ModelSource, feeds: Mapping[str, np.ndarray] | None = None
) -> ConvertedGraph:
    """Load, prepare and convert ``source`` with every input (float or not) kept as an input.

    Args:
        source: path, serialized bytes or ``ModelProto``.
        feeds: values for some inputs, by name, cast to the input's declared type; they are
            folded into the graph as constants.

    Returns:
        The :class:`ConvertedGraph`.

    Raises:
        ModelLoadError, ExternalDataError: the model cannot be read safely.
        InputSpecError: a feed names no graph input.
        UnsupportedOpError: some operators cannot be converted (all are listed).
        ImportFailedError: the converter failed for another reason.
    """
    original = load_model(source)
    initializers = {tensor.name for tensor in original.graph.initializer}
    inputs = [v.name for v in original.graph.input if v.name not in initializers]
    fed = {name: _as_declared(original, name, value) for name, value in (feeds or {}).items()}
    with foreign_errors(ImportFailedError, "an ONNX pre-pass failed"):
        prepared, notes = prepare_model(original, None, fed)
    module = _convert(prepared)
    with foreign_errors(ImportFailedError, "the converted graph cannot be mapped"):
        tensor_map, node_names = build_tensor_map(module, prepared)
    return ConvertedGraph(
        original=original,
        prepared=prepared,
        module=module,
        input_names=[name for name in inputs if name not in fed],
        output_names=[v.name for v in original.graph.output],
        feeds=fed,
        notes=notes,
        tensor_map=tensor_map,
        node_names=node_names,
    )


def _as_declared(model: onnx.ModelProto, name: str, value: np.ndarray) -> np.ndarray:
    """``value`` as an array of the declared element type of graph input ``name``."""
    declared = {v.name: v.type.tensor_type.elem_type for v in model.graph.input}
    initializers = {tensor.name for tensor in model.graph.initializer}
    if name not in declared or name in initializers:
        listing = ", ".join(n for n in declared if n not in initializers)
        raise InputSpecError(f"feed {shown(name)} is not a graph input (inputs: {listing})")
    array = np.asarray(value)
    if declared[name]:
        array = array.astype(onnx.helper.tensor_dtype_to_np_dtype(declared[name]))
    return array
