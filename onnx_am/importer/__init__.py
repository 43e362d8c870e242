"""The importer: an ONNX file in, a torch graph that computes what onnxruntime computes out.

``loading`` reads the file safely, ``input_spec`` describes its inputs, ``prepare/`` runs the
ONNX-side pre-passes, ``converters/`` extends onnx2torch, ``tensor_map`` names every tensor,
``batching`` decides how batches run, and ``model`` puts them together in :func:`import_onnx`.
"""

from __future__ import annotations

from onnx_am.importer.model import ImportedModel, import_onnx

__all__ = ["ImportedModel", "import_onnx"]
