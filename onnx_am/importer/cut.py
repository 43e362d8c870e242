"""Start the search at a tensor: cut the graph there and make that tensor a graph input.

``import_onnx(..., at="emb")`` (``--at emb``) sets the ONNX tensor ``emb`` instead of a graph
input: the nodes that only feed ``emb`` are removed, ``emb`` becomes a float graph input of
the shape the model produces for it, and every other input the rest of the graph still needs
(an attention mask, token type ids, position ids, a length) stays an input, fed as any other
(``--feed``; int inputs get the defaults of :func:`default_int_value`). The weights are not
touched, so onnxruntime on the cut model is the model itself with ``emb`` fed directly.

The box the search keeps ``emb`` in is the range the model produces: for an embedding lookup
or a one-hot (:mod:`onnx_am.importer.lookup`), per dimension over the rows of its matrix
(:func:`cut_domain`); otherwise over the tensor's values for random inputs in ``-1..1``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnx_am.errors import InputSpecError, shown
from onnx_am.importer.feeds import FeedValue
from onnx_am.importer.input_spec import FLOAT_TYPES, describe_value, graph_inputs
from onnx_am.importer.lookup import Lookup, find_lookup, lookup_candidates
from onnx_am.importer.validation import walk_graphs

if TYPE_CHECKING:
    from onnx_am.domain import DomainChoice

#: Sequence length when neither the user nor the model's declared shape gives one.
DEFAULT_SEQ_LEN = 16
#: Random inputs the range of a tensor that is not a lookup is measured over.
PROBE_SAMPLES = 16
AUTO = "auto"


@dataclass(frozen=True)
class Cut:
    """Where and how the graph was cut (see the module docstring).

    Attributes:
        tensor: the tensor the search sets (a graph input of the cut model).
        source: the model as loaded, before the cut (onnxruntime recomputes results on it).
        removed: how many nodes only fed ``tensor`` and were removed.
        dropped_inputs: graph inputs the cut model no longer needs.
        seq_len: the sequence length symbolic non-batch dims were set to.
        box: ``(low, high)``: the range of ``tensor`` as the model produces it.
        box_source: how ``box`` was found, one phrase.
        lookup: the embedding lookup or one-hot that produced ``tensor``, if any.
        auto: chosen without ``--at`` (the model had no float input).
    """

    tensor: str
    source: onnx.ModelProto = field(repr=False)
    removed: int
    dropped_inputs: tuple[str, ...]
    seq_len: int
    box: tuple[float, float]
    box_source: str
    lookup: Lookup | None = field(default=None, repr=False)
    auto: bool = False

    @property
    def note(self) -> str:
        """One line for the report and stderr."""
        how = "chosen automatically: the model has no float input" if self.auto else "--at"
        what = f"; it is the {self.lookup.describe()}" if self.lookup is not None else ""
        dropped = (
            f", inputs {list(self.dropped_inputs)} no longer needed" if self.dropped_inputs else ""
        )
        if self.lookup is not None and self.lookup.ids_input not in self.dropped_inputs:
            dropped += (
                f"; input {self.lookup.ids_input!r} still feeds other nodes and is held at its "
                "default there (token results are recomputed with their ids)"
            )
        return (
            f"search starts at tensor {self.tensor!r} ({how}){what}; {self.removed} nodes "
            f"before it cut away{dropped}; box {self.box[0]:.4g}..{self.box[1]:.4g} "
            f"({self.box_source}); sequence length {self.seq_len}"
        )

    def to_dict(self) -> dict:
        return {
            "tensor": self.tensor,
            "auto": self.auto,
            "removed_nodes": self.removed,
            "dropped_inputs": list(self.dropped_inputs),
            "seq_len": self.seq_len,
            "box": list(self.box),
            "box_source": self.box_source,
            "lookup": None
            if self.lookup is None
            else {
                "kind": self.lookup.kind,
                "ids_input": self.lookup.ids_input,
                "vocab_size": self.lookup.vocab_size,
                "width": int(self.lookup.matrix.shape[1]),
            },
            "crosscheck": "onnxruntime runs the unmodified weights with this tensor made a "
            "graph input; token results are recomputed on the uncut model with their ids",
        }


def cut_domain(cut: Cut, sample_shape: tuple[int, ...] = ()) -> DomainChoice:
    """The search box of a cut: the range the model produces at the tensor; for a lookup
    whose rows make the last axis of ``sample_shape``, per dimension over the rows (each
    dimension of the tensor between its smallest and largest value in the matrix)."""
    # the domain module imports ours
    from onnx_am.domain import DomainChoice, InputDomain, per_dimension_box

    low, high = cut.box
    width = int(cut.lookup.matrix.shape[1]) if cut.lookup is not None else None
    if width is not None and sample_shape and sample_shape[-1] == width:
        matrix = cut.lookup.matrix
        lows, highs = matrix.min(axis=0), matrix.max(axis=0)
        widths = highs - lows
        return DomainChoice(
            per_dimension_box(lows.tolist(), highs.tolist()),
            "cut",
            f"per dimension over the rows of the {cut.lookup.kind} matrix at tensor "
            f"{cut.tensor!r}: {width} ranges {float(widths.min()):.4g} to "
            f"{float(widths.max()):.4g} wide within {low:.4g}..{high:.4g}; the search "
            "variable's -1..1 is each dimension's range",
        )
    return DomainChoice(
        InputDomain(low, high),
        "cut",
        f"{low:.4g}..{high:.4g} at tensor {cut.tensor!r} ({cut.box_source})",
    )


def choose_cut(model: onnx.ModelProto, at: str | None) -> tuple[str | None, bool]:
    """The tensor to cut at: ``at`` itself, or for ``"auto"`` the largest-vocabulary lookup
    (of an input not named for positions, token types or segments) when the model has no
    float input (``None``: no cut). Returns ``(tensor, automatic)``."""
    if at is None:
        return None, False
    if at != AUTO:
        return at, False
    if any(v.type.tensor_type.elem_type in FLOAT_TYPES for v in graph_inputs(model)):
        return None, False
    candidates = [c for c in lookup_candidates(model) if _consumed(model, c.tensor)]
    if not candidates:
        return None, False
    return max(
        candidates, key=lambda found: (_is_token_input(found.ids_input), found.vocab_size)
    ).tensor, True


def _is_token_input(name: str) -> bool:
    """Not the ids of a position, token type or segment table (BERT's other embeddings,
    whose tables may be larger than a tiny vocabulary)."""
    lower = name.lower()
    return not any(word in lower for word in ("position", "type", "segment", "mask"))


def apply_cut(
    model: onnx.ModelProto,
    at: str | None,
    seq_len: int | None,
    given: Mapping[str, FeedValue],
) -> tuple[onnx.ModelProto, Cut | None, dict[str, FeedValue], dict[str, str]]:
    """Cut ``model`` as :func:`import_onnx` asks (``at``: a tensor, ``"auto"`` or ``None``).

    Returns:
        ``(model, cut, given, defaulted)``: the cut model (``model`` itself when not cut),
        the :class:`Cut`, the feeds with a default for every int input of the cut model the
        user did not feed, and input name -> how its default was chosen.
    """
    tensor, auto = choose_cut(model, at)
    if tensor is None:
        return model, None, dict(given), {}
    arrays = {name: _given_array(value) for name, value in given.items()}
    arrays = {name: array for name, array in arrays.items() if array is not None}
    cut, info = cut_model(model, tensor, seq_len, arrays, auto)
    given = dict(given)
    defaulted = {}
    for value in graph_inputs(cut)[1:]:
        spec = describe_value(value)
        if value.name in given or np.dtype(spec.dtype).kind == "f":
            continue
        shape = tuple(d if isinstance(d, int) else 1 for d in spec.shape)
        array, why = default_int_value(value.name, shape, np.dtype(spec.dtype))
        given[value.name] = FeedValue(value.name, array=array)
        defaulted[value.name] = why
    return cut, info, given, defaulted


def _given_array(value: FeedValue) -> np.ndarray | None:
    if value.array is not None:
        return value.array
    if value.scalar is not None and value.shape is not None:
        return np.full(value.shape, value.scalar)
    return None


def cut_model(
    model: onnx.ModelProto,
    tensor: str,
    seq_len: int | None = None,
    given: Mapping[str, np.ndarray] | None = None,
    auto: bool = False,
    seed: int = 0,
) -> tuple[onnx.ModelProto, Cut]:
    """The model with ``tensor`` made a graph input and what only fed it removed.

    Args:
        model: the model as loaded (not modified).
        tensor: an ONNX tensor produced in the main graph.
        seq_len: the size of symbolic non-batch dims (default: the ids input's declared
            length, else :data:`DEFAULT_SEQ_LEN`).
        given: values of inputs the user fed, used when measuring the tensor.
        auto: the tensor was chosen automatically (said in the note).
        seed: seeds the random inputs a non-lookup tensor's range is measured over.

    Raises:
        InputSpecError: no tensor of that name (the nearest names are listed), a
            sequence length below 1, or a tensor onnxruntime cannot compute.
    """
    _check_tensor(model, tensor)
    lookup = find_lookup(model, tensor)
    seq_len = seq_len or _declared_length(model, lookup) or DEFAULT_SEQ_LEN
    if seq_len < 1:
        raise InputSpecError(f"sequence length {seq_len} must be at least 1")
    sizes = {**_dim_sizes(model, seq_len), "": seq_len}
    probe = _probe(model, tensor, sizes, dict(given or {}), seed, samples=1 if lookup else None)
    if lookup is not None:
        box = (float(lookup.matrix.min()), float(lookup.matrix.max()))
        source = f"per dimension over the rows of the {lookup.kind} matrix, within this range"
    else:
        box = (float(probe.min()), float(probe.max()))
        source = f"its values for {PROBE_SAMPLES} random inputs in -1..1"
        if not box[0] < box[1]:
            box = (box[0] - 1.0, box[1] + 1.0)
            source += ", widened by 1 (the tensor is constant there)"
    cut, removed, dropped = _cut_graph(model, tensor, probe, sizes)
    info = Cut(tensor, model, removed, dropped, seq_len, box, source, lookup, auto)
    return cut, info


def _consumed(model: onnx.ModelProto, tensor: str) -> bool:
    """Whether a node of the main graph reads ``tensor`` (else a cut there leaves nothing to
    compute)."""
    return any(tensor in node.input for node in model.graph.node)


def _check_tensor(model: onnx.ModelProto, tensor: str) -> None:
    produced = [name for node in model.graph.node for name in node.output if name]
    if tensor in produced:
        if not _consumed(model, tensor):
            raise InputSpecError(
                f"--at {shown(tensor)} feeds no node: nothing would be computed from it"
            )
        return
    inputs = [value.name for value in graph_inputs(model)]
    if tensor in inputs:
        raise InputSpecError(
            f"--at {shown(tensor)} is a graph input; optimize it with --input {shown(tensor)}"
        )
    near = difflib.get_close_matches(tensor, produced + inputs, n=5, cutoff=0.3)
    hint = f"; nearest names: {', '.join(near)}" if near else ""
    raise InputSpecError(f"--at names no tensor {shown(tensor)} in the model{hint}")


def _declared_length(model: onnx.ModelProto, lookup: Lookup | None) -> int | None:
    if lookup is None:
        return None
    spec = next(describe_value(v) for v in graph_inputs(model) if v.name == lookup.ids_input)
    length = spec.shape[-1] if len(spec.shape) >= 2 else None
    return length if isinstance(length, int) else None


def _dim_sizes(model: onnx.ModelProto, seq_len: int) -> dict[str, int]:
    """Symbolic dim -> probe size: a leading (batch) dim 1, every other ``seq_len``."""
    sizes: dict[str, int] = {}
    for value in graph_inputs(model):
        for axis, dim in enumerate(describe_value(value).shape):
            if isinstance(dim, str) and dim != "?":
                sizes.setdefault(dim, 1 if axis == 0 else seq_len)
    return sizes


def _shape(spec, sizes: dict[str, int]) -> tuple[int, ...]:
    """A concrete shape: named dims from ``sizes``, an unnamed leading dim 1, others
    the sequence length (stored under ``""``)."""
    return tuple(
        dim if isinstance(dim, int) else sizes.get(dim, 1 if axis == 0 else sizes[""])
        for axis, dim in enumerate(spec.shape)
    )


def default_int_value(name: str, shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, str]:
    """The value an int input of a cut model gets when not fed, and why.

    A mask is all ones, position ids count ``0, 1, ...`` along the last axis, a length is the
    sequence length (the last dim), anything else (token type ids, segments) zeros.
    """
    lower = name.lower()
    if "mask" in lower:
        return np.ones(shape, dtype), "ones (default for a mask)"
    if "position" in lower or lower.startswith("pos"):
        positions = np.arange(shape[-1] if shape else 1, dtype=dtype)
        return np.ascontiguousarray(np.broadcast_to(positions, shape)), "0, 1, ... (default)"
    if "len" in lower and shape and len(shape) <= 1:
        return np.full(shape, 1, dtype), "1 (default)"
    return np.zeros(shape, dtype), "zeros (default)"


def _probe(model, tensor, sizes, given, seed, samples) -> np.ndarray:
    """The tensor's values (stacked over random samples) for probe inputs; onnxruntime."""
    import onnxruntime as ort

    from onnx_am.reference.optimization import quiet_session_options
    from onnx_am.reference.runtime import expose_tensors

    session = ort.InferenceSession(
        expose_tensors(model, [tensor]).SerializeToString(),
        quiet_session_options(),
        providers=["CPUExecutionProvider"],
    )
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(samples or PROBE_SAMPLES):
        feed = {}
        for value in graph_inputs(model):
            spec = describe_value(value)
            shape = _shape(spec, sizes)
            dtype = np.dtype(spec.dtype)
            if value.name in given:
                feed[value.name] = np.asarray(given[value.name]).astype(dtype)
            elif dtype.kind == "f":
                feed[value.name] = rng.uniform(-1, 1, shape).astype(dtype)
            else:
                feed[value.name] = default_int_value(value.name, shape, dtype)[0]
        try:
            values.append(np.asarray(session.run([tensor], feed)[0]))
        except Exception as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
            raise InputSpecError(
                f"cannot compute tensor {shown(tensor)} with onnxruntime to cut there: {first}; "
                "feed the inputs it needs with --feed or set --seq-len"
            ) from exc
    if values[0].dtype.kind != "f":
        raise InputSpecError(
            f"tensor {shown(tensor)} is {values[0].dtype}, not float; the search sets a "
            "float tensor (the output of an embedding Gather or a one-hot Cast)"
        )
    return np.stack(values)


def _cut_graph(model, tensor, probe, sizes) -> tuple[onnx.ModelProto, int, tuple[str, ...]]:
    graph = model.graph
    needed = {out.name for out in graph.output}
    kept = []
    for node in reversed(graph.node):
        if not any(name in needed for name in node.output):
            continue
        if tensor in node.output:
            if any(name in needed for name in node.output if name != tensor):
                raise InputSpecError(
                    f"--at {shown(tensor)} is one output of a {node.op_type} node whose other "
                    "outputs are used too; cut at a tensor after it"
                )
            continue
        kept.append(node)
        needed.update(name for name in node.input if name)
        needed.update(_outer_names(node))
    kept.reverse()
    needed.add(tensor)
    originals = graph_inputs(model)
    batch = next(
        (d for v in originals for d in describe_value(v).shape[:1] if isinstance(d, str)), None
    )
    sample = probe[0]
    new_input = onnx.helper.make_tensor_value_info(
        tensor,
        onnx.helper.np_dtype_to_tensor_dtype(sample.dtype),
        [batch if batch is not None else sample.shape[0], *sample.shape[1:]],
    )
    inputs = [new_input] + [
        _concrete(value, sizes, batch) for value in originals if value.name in needed
    ]
    dropped = tuple(value.name for value in originals if value.name not in needed)
    new_graph = onnx.helper.make_graph(
        kept,
        graph.name,
        inputs,
        list(graph.output),
        initializer=[t for t in graph.initializer if t.name in needed],
    )
    cut = onnx.helper.make_model(new_graph, opset_imports=model.opset_import)
    cut.ir_version = model.ir_version
    cut.producer_name, cut.producer_version = model.producer_name, model.producer_version
    cut.metadata_props.extend(model.metadata_props)
    cut.functions.extend(model.functions)
    return cut, len(graph.node) - len(kept), dropped


def _outer_names(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs read (a superset of those from the enclosing graph)."""
    names: set[str] = set()
    for attribute in node.attribute:
        subgraphs = [attribute.g] if attribute.HasField("g") else []
        for sub in [*subgraphs, *attribute.graphs]:
            for inner in walk_graphs(sub):
                for inner_node in inner.node:
                    names.update(inner_node.input)
    return names


def _concrete(value: onnx.ValueInfoProto, sizes: dict[str, int], batch: str | None):
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(value)
    for axis, dim in enumerate(copy.type.tensor_type.shape.dim):
        if dim.HasField("dim_value") or (axis == 0 and (batch is None or dim.dim_param == batch)):
            continue
        if dim.dim_param != batch:
            dim.dim_value = sizes.get(dim.dim_param, sizes[""])
    return copy
