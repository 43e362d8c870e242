"""Extra onnx2torch converters, registered through onnx2torch's converter registry.

onnx2torch stops at about opset 17 and lacks some attributes and ops. Each module here
registers converters for newer op versions or missing cases with ``add_converter``; importing
this package registers them all, once.
"""

from __future__ import annotations
