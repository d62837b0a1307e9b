"""One device for everything a run touches, checked: DeviceWatch records every tensor a module sees on another
device than the run's, and every torch operation that mixes floating-point tensors of two devices.

    with DeviceWatch("cuda") as watch:
        analyze_dictionary(ws, request)
    assert not watch.problems, watch.problems

On a GPU a mixed operation fails anyway; on the CPU (and on `meta`, where tests run "another device" without
one) torch lets some mixes through silently, which is what the watch is for. It follows CUDA's rule: 0-d
tensors (scalars) and integer tensors (indices) may live on the CPU; copies between devices (`to`, `cpu`,
`copy_`) are the one legitimate way across. The watch costs a Python call per torch operation: use it in checks
and tests, not in production runs.
"""
from __future__ import annotations

import contextlib
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

_CROSSINGS = {torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda, torch.Tensor.copy_, torch.Tensor.__setitem__,
              torch._has_compatible_shallow_copy_type}
"""Operations whose point is to move data between devices: copies, `buf[i:j] = part` (a copy_, which CUDA does
across devices), and the check nn.Module.to makes before it moves a parameter."""
MAX_PROBLEMS = 50


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one (`cuda` is `cuda:N` for the current device N)."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


def _data(tensor) -> bool:
    """A tensor that must be on the run's device (not a scalar, not an index)."""
    return isinstance(tensor, torch.Tensor) and tensor.dim() > 0 and (tensor.is_floating_point() or
                                                                      tensor.is_complex())


class _MixedDevices(TorchFunctionMode):
    def __init__(self, watch: DeviceWatch):
        super().__init__()
        self.watch = watch

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _CROSSINGS:
            devices = {t.device for t in tree_leaves((args, kwargs)) if _data(t)}
            if len(devices) > 1:
                self.watch.report(f"{getattr(func, '__name__', func)} mixes {sorted(map(str, devices))}")
        return func(*args, **kwargs)


class DeviceWatch(contextlib.AbstractContextManager):
    """Records, while active, every tensor off `device` that a module's forward receives or holds, and every
    operation mixing devices. `problems` lists them (first MAX_PROBLEMS); `forwards` counts module forwards by
    class name (proof that the run reached the model)."""

    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)
        self.problems: list[str] = []
        self.forwards: Counter[str] = Counter()
        self._handle = None
        self._mode = _MixedDevices(self)

    def report(self, problem: str) -> None:
        if problem not in self.problems and len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    def check(self, module: torch.nn.Module, label: str) -> None:
        """Report the parameters and buffers of `module` (and its children) that are off the device."""
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if not same_device(tensor.device, self.device):
                self.report(f"{label}.{name} is on {tensor.device}, not {self.device}")

    def _pre_hook(self, module: torch.nn.Module, args) -> None:
        label = type(module).__name__
        self.forwards[label] += 1
        held = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        given = [(f"input {i}", t) for i, t in enumerate(tree_leaves(args)) if _data(t)]
        for name, tensor in held + given:
            if not same_device(tensor.device, self.device):
                self.report(f"{label} {name} is on {tensor.device}, not {self.device}")

    def __enter__(self) -> DeviceWatch:
        self._handle = torch.nn.modules.module.register_module_forward_pre_hook(self._pre_hook)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
        self._handle.remove()
