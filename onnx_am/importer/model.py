"""Turn an ONNX model into a torch graph that computes what onnxruntime computes.

``import_onnx`` loads the model (see :mod:`onnx_am.importer.loading`), runs the ONNX-side
pre-passes (:mod:`onnx_am.importer.prepare`), converts with onnx2torch (extended by
:mod:`onnx_am.importer.converters`), and records, for every ONNX tensor name, the place in
the torch graph that produces it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import onnx
import onnx2torch
import torch
from onnx2torch.node_converters import get_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.utils.safe_shape_inference import safe_shape_inference
from torch import fx

import onnx_am.importer.converters  # noqa: F401  (registers the extra converters)
from onnx_am.errors import ImportFailedError, UnsupportedOpError, one_line
from onnx_am.importer.batching import BatchSupport, decide_batching
from onnx_am.importer.control_flow import batch_wide_bounds, data_dependent_control
from onnx_am.importer.converters.control_flow import converting
from onnx_am.importer.cost import ForwardCost, estimate_cost
from onnx_am.importer.cut import Cut, apply_cut
from onnx_am.importer.feeds import Feed, FeedInput, parse_value, resolve_feeds
from onnx_am.importer.guard import describe, foreign_errors, raised_by_dependency
from onnx_am.importer.input_spec import InputSpec, TensorSpec, choose_input, describe_outputs
from onnx_am.importer.limits import ProbeLimit, check_fits, check_shapes, time_limit
from onnx_am.importer.loading import ModelSource, load_model
from onnx_am.importer.metadata import ProducerMetadata, read_metadata
from onnx_am.importer.module_names import legal_module_names
from onnx_am.importer.prepare import infer_shapes, prepare_model
from onnx_am.importer.tensor_map import TensorLocation, build_tensor_map, extract_tensors
from onnx_am.importer.unsupported import Unsupported, summarize_unsupported


@dataclass(frozen=True)
class ImportedModel:
    """An ONNX model and its torch twin, built once by :func:`import_onnx` and not changed after.

    Attributes:
        original: the model as loaded, never modified (onnxruntime runs this one).
        prepared: the model after the ONNX pre-passes; this is what was converted.
        module: the onnx2torch graph, in eval mode, parameters frozen.
        input: the input that activation maximization optimizes.
        outputs: the graph outputs.
        tensor_map: ONNX tensor name -> where the torch graph produces it.
        node_names: torch module name -> ONNX node name.
        batch: how batches of inputs are run.
        opsets: domain -> opset version.
        prepass_notes: what the pre-passes changed, one line each.
        feeds: the value of every other graph input, in graph order; the prepared model
            holds them as initializers, onnxruntime is fed them.
        metadata: what the producer recorded (image size, class names, normalization).
        cut: where the graph was cut when the search starts at a tensor (``at``); then
            ``original`` is the cut model and ``cut.source`` the model as loaded.
        cost: the estimated cost of one forward pass (it sets the probes' time limit).
        probe_limit: how long the import probes could run; the parity check runs under it.
    """

    original: onnx.ModelProto
    prepared: onnx.ModelProto
    module: fx.GraphModule
    input: InputSpec
    outputs: list[TensorSpec]
    tensor_map: dict[str, TensorLocation]
    node_names: dict[str, str]
    batch: BatchSupport
    opsets: dict[str, int]
    prepass_notes: list[str] = field(default_factory=list)
    feeds: dict[str, Feed] = field(default_factory=dict)
    metadata: ProducerMetadata = field(default_factory=ProducerMetadata)
    cut: Cut | None = None
    cost: ForwardCost = field(default_factory=ForwardCost)
    probe_limit: ProbeLimit = field(default_factory=ProbeLimit)

    @property
    def inputs(self) -> list[dict]:
        """Every graph input in graph order, with how it is fed (``"optimized"`` or a feed)."""
        described = []
        for value in self.original.graph.input:
            if value.name == self.input.name:
                described.append({**self.input.to_dict(), "fed": "optimized"})
            elif value.name in self.feeds:
                described.append(self.feeds[value.name].to_dict())
        return described

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    def onnx_node(self, module_name: str) -> onnx.NodeProto:
        """The ONNX node (of the prepared model) that a torch module was converted from."""
        name = self.node_names[module_name]
        return next(node for node in self.prepared.graph.node if node.name == name)

    def extractor(self, names: list[str], module: fx.GraphModule | None = None) -> fx.GraphModule:
        """A graph module mapping the input batch to the given ONNX tensors (a tuple).

        Args:
            names: ONNX tensor names (graph outputs or intermediate tensors).
            module: a rewritten copy of :attr:`module` to extract from (default: the original).
        """
        return extract_tensors(module or self.module, self.tensor_map, names)

    def run(
        self, x: torch.Tensor, names: list[str] | None = None, module: fx.GraphModule | None = None
    ) -> list[torch.Tensor]:
        """Compute ONNX tensors (default: all outputs) for a batch ``x``, batch-safe."""
        extractor = self.extractor(names or self.output_names, module)
        return self.batch.call(extractor, x)


def import_onnx(
    source: ModelSource,
    input_name: str | None = None,
    input_shape: list[int] | tuple[int, ...] | None = None,
    feeds: Mapping[str, FeedInput] | None = None,
    at: str | None = None,
    seq_len: int | None = None,
    probe_limit: ProbeLimit | None = None,
) -> ImportedModel:
    """Import an ONNX model for activation maximization.

    Args:
        source: path, serialized bytes or ``ModelProto``.
        input_name: the float input to optimize, required when there are several.
        input_shape: a full shape for that input; fills symbolic dims (batch included).
        feeds: values for the other inputs, by name: a number broadcast to the declared
            shape (``{"sr": 16000}``), an array, a ``.npy`` path, or the ``--feed`` text
            forms (``"0:2,1,128"``). Float inputs not named are fed zeros when their shape
            is known (see :mod:`onnx_am.importer.feeds`).
        at: an ONNX tensor to start the search at instead of a graph input (the graph is
            cut there, :mod:`onnx_am.importer.cut`); ``"auto"``: the embedding lookup or
            one-hot of a model without float inputs, else no cut.
        seq_len: the sequence length of a cut model's symbolic dims.
        probe_limit: how long the probes that run the converted graph may take (default:
            derived from the model's estimated work, see :class:`ProbeLimit`).

    Returns:
        The :class:`ImportedModel`.

    Raises:
        ModelLoadError, ExternalDataError: the model cannot be read safely.
        UnsupportedOpError: some operators cannot be converted (all are listed).
        InputSpecError: no usable float input, ambiguous input, a shape too large, or an
            input that needs a value that was not given or does not fit.
        ImportFailedError: the converter failed for another reason.
        ResourceLimitError: a tensor or the model would not fit in memory, or the probes ran
            longer than ``probe_limit`` allows.
    """
    original = load_model(source)
    metadata = read_metadata(original)
    given = {name: parse_value(name, value) for name, value in (feeds or {}).items()}
    original, cut, given, defaulted = apply_cut(original, at, seq_len, given)
    if cut is not None:
        input_name = cut.tensor
    spec = choose_input(original, input_name, input_shape, metadata.image_size)
    fed = resolve_feeds(original, spec, given)
    fed = {name: replace(f, source=defaulted.get(name, f.source)) for name, f in fed.items()}
    with foreign_errors(ImportFailedError, "an ONNX pre-pass failed"):
        prepared, notes = prepare_model(
            original,
            spec,
            {name: feed.value for name, feed in fed.items()},
            {name: feed.batch_axis for name, feed in fed.items() if feed.batch_axis is not None},
        )
        shapes = infer_shapes(prepared, spec)
        check_shapes(shapes)
        cost = estimate_cost(prepared, shapes)
    check_fits(cost)
    probe_limit = probe_limit or ProbeLimit()
    if input_shape is None and metadata.image_size and spec.shape[1:] != spec.sample_shape:
        notes.insert(
            0,
            f"input shape {[1, *spec.sample_shape]} from metadata image size "
            f"{list(metadata.image_size)}",
        )
    opsets = {entry.domain or "ai.onnx": entry.version for entry in prepared.opset_import}
    module = _convert(prepared)
    with (
        foreign_errors(ImportFailedError, "the converted graph fails"),
        time_limit(probe_limit, cost, "running the converted graph on probe inputs"),
    ):
        batch_dim = spec.shape[0] if spec.shape and isinstance(spec.shape[0], str) else None
        deciding = data_dependent_control(prepared, spec.name)
        shared = [*deciding, *batch_wide_bounds(prepared, spec.name)]
        decision = decide_batching(module, prepared, spec.sample_shape, batch_dim, shared)
    if deciding:
        notes.append(
            f"the function of every unit has a branch: {', '.join(map(repr, deciding))} "
            "decide(s) on values computed from the input; each row takes its own branch and "
            "its gradient is that of the branch taken"
        )
    if decision.module is not None:
        prepared, module, notes = decision.prepared, decision.module, [*notes, decision.note]
    with foreign_errors(ImportFailedError, "the converted graph cannot be mapped"):
        tensor_map, node_names = build_tensor_map(module, prepared)
    return ImportedModel(
        original=original,
        prepared=prepared,
        module=module,
        input=spec,
        outputs=describe_outputs(original),
        tensor_map=tensor_map,
        node_names=node_names,
        batch=decision.support,
        opsets=opsets,
        prepass_notes=notes,
        feeds=fed,
        metadata=metadata,
        cut=cut,
        cost=cost,
        probe_limit=probe_limit,
    )


def _convert(model: onnx.ModelProto) -> fx.GraphModule:
    with foreign_errors(ImportFailedError, "the graph cannot be read"):
        unsupported = _find_unsupported(model, dry_run=False)
    _raise_if_unsupported(unsupported)
    try:
        with warnings.catch_warnings():
            # onnx2torch warns about approximations (Resize nearest modes); parity judges them
            warnings.simplefilter("ignore")
            with legal_module_names(), converting(model):
                module = onnx2torch.convert(model, attach_onnx_mapping=True)
    except Exception as exc:
        if not _refused(exc):
            raise
        # Some converters refuse attributes only when called: find every such node.
        with foreign_errors(ImportFailedError, "onnx2torch could not convert the model"):
            _raise_if_unsupported(_find_unsupported(model, dry_run=True))
        raise ImportFailedError(
            one_line(f"onnx2torch could not convert the model: {describe(exc)}")
        ) from exc
    module.eval()
    for tensor in [*module.parameters(), *module.buffers()]:
        tensor.requires_grad_(False)
    return module


def _refused(exc: Exception) -> bool:
    """A converter's refusal: ``NotImplementedError`` (ours say so) or any library error."""
    return isinstance(exc, NotImplementedError) or raised_by_dependency(exc)


def _raise_if_unsupported(unsupported: list[tuple[Unsupported, str]]) -> None:
    if unsupported:
        raise UnsupportedOpError(summarize_unsupported(unsupported), [n for n, _ in unsupported])


def find_unsupported_nodes(model: onnx.ModelProto, dry_run: bool = True) -> list[Unsupported]:
    """Every node that cannot be converted, as ``(node name, domain, op type, opset)``.

    Args:
        model: the (prepared) model.
        dry_run: also call each node's converter, to catch unsupported attributes.
    """
    return [node for node, _ in _find_unsupported(model, dry_run)]


def _find_unsupported(model: onnx.ModelProto, dry_run: bool) -> list[tuple[Unsupported, str]]:
    """Like :func:`find_unsupported_nodes`, with the converter's reason (empty: no converter)."""
    opsets = {entry.domain: entry.version for entry in model.opset_import}
    if dry_run:  # converters read inferred shapes, as in onnx2torch.convert
        model = safe_shape_inference(model)
    with foreign_errors(ImportFailedError, "the graph cannot be read"):
        graph = OnnxGraph(model.graph)
    found = []
    for node in graph.nodes.values():
        domain = node.domain
        version = opsets.get(domain, opsets.get("ai.onnx", 0))
        label = (
            node.proto.name or node.unique_name,
            domain or "ai.onnx",
            node.operation_type,
            version,
        )
        try:
            converter = get_converter(
                domain=domain, operation_type=node.operation_type, version=version
            )
        except NotImplementedError:
            found.append((label, ""))
            continue
        if not dry_run:
            continue
        try:
            with warnings.catch_warnings(), legal_module_names(), converting(model):
                warnings.simplefilter("ignore")
                converter(node, graph)
        except Exception as exc:
            if not _refused(exc):
                raise
            found.append((label, (str(exc).splitlines() or [type(exc).__name__])[0]))
    return found
