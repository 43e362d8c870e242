"""Benchmarks of onnx-am: speed, memory and AM quality on the sample models.

Not part of the library. Run each from the repository root as a module, e.g.
``python -m benchmarks.speed --quick``; every benchmark writes its results under
``benchmarks/results/`` (``--out`` picks another folder). Shared code lives in
:mod:`benchmarks.harness`.
"""
