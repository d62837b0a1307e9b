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
def available_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on `device` (CPU: the kernel's MemAvailable), None where unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def human_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} bytes"


def require_memory(need: int, what: str, device: torch.device) -> None:
    """InputError before allocating when `what` needs more than `device` has free (an estimate: a lower bound
    of what the job allocates, so a refusal is never a job that would have fitted)."""
    free = available_memory(device)
    if free is not None and need > free:
        raise InputError(f"{what} needs at least {human_bytes(need)} of {device.type} memory, but "
                         f"{human_bytes(free)} is free; choose smaller values")
