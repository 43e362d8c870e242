"""The ``onnx-am`` command line (installed as the ``onnx_am_cli`` package)."""

#: ``ctx.meta`` key: a command already printed its JSON object (an error then adds none).
JSON_EMITTED_KEY = "onnx_am.json_emitted"
