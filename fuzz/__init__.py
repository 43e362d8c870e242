"""The mutation fuzzer of ``onnx-am inspect``: test infrastructure, not a benchmark.

Run it from the repository root: ``python -m fuzz --cases N`` (or ``--minutes M``); see
:mod:`fuzz.campaign` for the outcomes, :mod:`fuzz.mutators` for the mutator families.
``tests/test_fuzz.py`` runs a short fixed-seed campaign. Results go to
``benchmarks/results/fuzz.md`` unless ``--out`` says otherwise.
"""
