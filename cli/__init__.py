"""The ``onnx-am`` command line (installed as the ``onnx_am_cli`` package)."""
