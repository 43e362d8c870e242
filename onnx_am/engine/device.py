"""Which device the engine runs on: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import torch

from onnx_am.errors import OnnxAmError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")


def resolve_device(text: str) -> str:
    """``auto`` becomes ``cuda`` when torch sees a CUDA device, else ``cpu``; others are checked.

    Raises:
        OnnxAmError: an unknown device, CUDA asked for without one, or an index past the
            last device.
    """
    name = text.strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    head, _, index = name.partition(":")
    if head != "cuda" or (index and not index.isdigit()):
        raise OnnxAmError(f"unknown device {text!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise OnnxAmError(f"device {text!r} asked for but torch sees no CUDA device")
    if index and int(index) >= torch.cuda.device_count():
        raise OnnxAmError(
            f"device {text!r} asked for but torch sees {torch.cuda.device_count()} CUDA device(s)"
        )
    return name


__all__ = ["DEVICE_CHOICES", "resolve_device"]
