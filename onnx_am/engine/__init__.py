"""The activation-maximization engine: settings, starts, the batched loop, memory sizing,
trivial baselines and results. :func:`maximize` is its entry point."""

from __future__ import annotations

from onnx_am.engine.config import AMConfig
from onnx_am.engine.maximizer import maximize

__all__ = ["AMConfig", "maximize"]
