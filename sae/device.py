"""One device abstraction: cuda if present, else mps, else cpu; float32 on CPU, autocast on GPU."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from store.errors import InputError

DEVICE_TYPES = ("cuda", "mps", "cpu")
"""What --device accepts (with an index for cuda: cuda:1)."""


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """The device to run on: the one asked for, else cuda > mps > cpu."""
    if requested is not None and str(requested) != "auto":
        try:
            device = torch.device(requested)
        except (RuntimeError, ValueError, TypeError):  # torch's own message lists its ~20 device types
            device = None
        if device is None or device.type not in DEVICE_TYPES:
            raise InputError(f"unknown device {str(requested)!r} (use cuda, mps or cpu; cuda:N picks one GPU)")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {requested} asked for, but CUDA is not available here")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {requested} asked for, but this machine has {torch.cuda.device_count()} "
                             "CUDA device(s)")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise InputError(f"device {requested} asked for, but MPS is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """bf16 autocast and TF32 matmuls on CUDA (~2x on bf16 GPUs), inside the block only: statistics, evaluation
    and matching pursuit's atom choice after it stay in full fp32. Nothing on CPU, where bf16 matmul runs ~400x
    slower."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
