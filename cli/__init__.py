"""The ``onnx-am`` command line (installed as the ``onnx_am_cli`` package)."""

import os
import time

os.environ.setdefault("MKL_CBWR", "AUTO")  # reproducible BLAS, see onnx_am/__init__.py

#: ``ctx.meta`` key: a command already printed its JSON object (an error then adds none).
JSON_EMITTED_KEY = "onnx_am.json_emitted"
#: When this package was imported, before torch is loaded.
STARTED = time.monotonic()
#: When the time budget starts: :data:`STARTED` when running as the ``onnx-am`` program
#: (set by ``main``), None (the start of ``analyze``) when the commands are invoked otherwise,
#: e.g. by a test runner in a long-lived process.
BUDGET_START: float | None = None
