"""One device abstraction: cuda if present, else mps, else cpu; float32 on CPU, autocast on GPU."""
from __future__ import annotations

import contextlib

import torch

from store.errors import InputError


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """The device to run on: the one asked for, else cuda > mps > cpu."""
    if requested is not None and str(requested) != "auto":
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {requested} asked for, but CUDA is not available here")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise InputError(f"device {requested} asked for, but MPS is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (~2x on bf16 GPUs); nothing on CPU, where bf16 matmul runs ~400x slower."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
