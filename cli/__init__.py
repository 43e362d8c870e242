"""The ``onnx-am`` command line (installed as the ``onnx_am_cli`` package)."""

import os
import time

os.environ.setdefault("MKL_CBWR", "AUTO")  # reproducible BLAS, see onnx_am/__init__.py

#: ``ctx.meta`` key: a command already printed its JSON object (an error then adds none).
JSON_EMITTED_KEY = "onnx_am.json_emitted"
#: When this package was imported, before torch is loaded (a ``time.monotonic()`` reading).
#: ``main`` hands it to the commands (``ctx.obj``), whose deadline then starts here so that
#: loading torch counts against the time budget; invoked otherwise (e.g. by a test runner in
#: a long-lived process) a command's deadline starts when the command does.
STARTED = time.monotonic()
#: ``ctx.obj`` key of the start a command's deadline begins at.
START_KEY = "onnx_am.start"
