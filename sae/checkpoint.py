"""Training checkpoints: one safetensors file whose header carries the rest as JSON. Nothing is unpickled.

    tensors   sae.NAME               the dictionary's state_dict
              optimizer.I.NAME       the optimizer's per-parameter tensors (Adam's moments) of parameter I
              state.last_fired       the firing history (TrainState.last_fired)
              rng.torch, rng.cuda.I  the torch RNG states
              rng.python, rng.numpy  the Mersenne-Twister keys of Python's and numpy's RNGs (int64)
    metadata  {"sparsescope": JSON}  format and version, config, spec, the rest of TrainState (step, position,
                                     scale, log, ...), the optimizer's scalar state (step counts) and its
                                     param-group hyper-parameters, the scalar parts of the RNG states

Reading one runs no code whatever the file holds (a shared workspace is not a way in), and every key, shape
and dtype is checked before anything is restored: a truncated, tampered or foreign file is one InputError line.
A checkpoint is written to a temp file, fsynced and renamed over the previous one: a killed writer leaves the
previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
import random
import re
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from store.errors import InputError
from store.faults import crash_point

FORMAT = "sparsescope-checkpoint"
VERSION = 2
_KEY = "sparsescope"
_TOP_KEYS = {"format", "version", "config", "spec", "state", "optimizer", "rng"}
_TENSOR = re.compile(r"^(sae\.[\w.]+|optimizer\.\d+\.\w+|state\.last_fired|rng\.(torch|python|numpy|cuda\.\d+))$")


# ---------------------------------------------------------------------------------------------- writing

def _scalar(value) -> dict:
    """A 0-dim tensor or a Python number of the optimizer state as JSON (the dtype keeps it exact)."""
    if torch.is_tensor(value):
        return {"value": value.item(), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, (bool, int, float)) or value is None:
        return {"value": value}
    raise TypeError(f"optimizer state value of type {type(value).__name__} cannot go into a checkpoint")


def _rng() -> tuple[dict, dict]:
    """(tensors, JSON) of every RNG a run draws from."""
    py_version, py_keys, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.python": torch.tensor(py_keys, dtype=torch.int64),
               "rng.numpy": torch.from_numpy(np_keys.astype(np.int64))}
    if torch.cuda.is_available():
        tensors |= {f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    return tensors, {"python": [py_version, py_gauss], "numpy": [np_name, int(np_pos), int(np_has_gauss),
                                                                  float(np_gauss)]}


def save_checkpoint(path: Path, sae, optimizer, state, config, spec: dict) -> None:
    """Write a checkpoint atomically (temp file, fsync, rename): a killed writer leaves the previous one."""
    tensors = {f"sae.{k}": v for k, v in sae.state_dict().items()}
    opt = optimizer.state_dict()
    scalars = {}
    for index, entries in opt["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = _scalar(value)
    rng_tensors, rng_json = _rng()
    tensors |= rng_tensors
    numbers = {k: v for k, v in asdict(state).items() if k != "last_fired"}
    if state.last_fired is not None:
        tensors["state.last_fired"] = state.last_fired
    header = {"format": FORMAT, "version": VERSION, "config": asdict(config), "spec": spec, "state": numbers,
              "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars}, "rng": rng_json}
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, tmp, metadata={_KEY: json.dumps(header)})
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    crash_point("checkpoint.written")
    os.replace(tmp, path)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a power cut after it keeps the new checkpoint)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a folder; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- reading

def load_checkpoint(path: Path) -> dict:
    """The checkpoint at `path` as {version, config, spec, state, sae, optimizer, rng, path} (sae and optimizer
    as their load_state_dict takes them); InputError (one line) when it is missing, truncated or not a valid one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no checkpoint to resume at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            raw = (handle.metadata() or {}).get(_KEY)
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors reports a bad file with its own error types
        raise InputError(f"checkpoint {path} is truncated or corrupted ({exc.__class__.__name__}); "
                         "delete it to start over") from None
    try:
        header = json.loads(raw) if raw is not None else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
        raise InputError(f"checkpoint {path} is not a SparseScope v{VERSION} checkpoint; delete it to start over")
    try:
        return _payload(header, tensors) | {"path": str(path)}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"checkpoint {path} is malformed ({_one_line(exc)}); delete it to start over") from None


def _one_line(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return text if isinstance(exc, ValueError) else f"{exc.__class__.__name__}: {text}"


def _payload(header: dict, tensors: dict[str, torch.Tensor]) -> dict:
    unknown = sorted(set(header) - _TOP_KEYS) + sorted(k for k in tensors if not _TENSOR.match(k))
    missing = sorted(_TOP_KEYS - set(header)) + [k for k in ("rng.torch", "rng.python", "rng.numpy")
                                                 if k not in tensors]
    if unknown or missing:
        raise ValueError(f"unknown keys {unknown}, missing keys {missing}" if unknown else f"missing keys {missing}")
    _check_rng_tensors(tensors)
    optimizer = header["optimizer"]
    state: dict = {}
    for name, value in optimizer["scalars"].items():
        state[int(name)] = {k: torch.tensor(v["value"], dtype=_dtype(v["dtype"])) if "dtype" in v
                            else v["value"] for k, v in value.items()}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
              for group in optimizer["param_groups"]]
    rng = header["rng"]
    cuda = sorted((int(k.rsplit(".", 1)[1]), v) for k, v in tensors.items() if k.startswith("rng.cuda."))
    return {"version": header["version"], "config": header["config"], "spec": header["spec"],
            "state": header["state"] | {"last_fired": tensors.get("state.last_fired")},
            "sae": {k[len("sae."):]: v for k, v in tensors.items() if k.startswith("sae.")},
            "optimizer": {"state": state, "param_groups": groups},
            "rng": {"torch": tensors["rng.torch"], "cuda": [v for _, v in cuda] or None,
                    "python": (rng["python"][0], tuple(int(x) for x in tensors["rng.python"].tolist()),
                               rng["python"][1]),
                    "numpy": (rng["numpy"][0], tensors["rng.numpy"].numpy().astype(np.uint32), *rng["numpy"][1:])}}


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


def _check_rng_tensors(tensors: dict[str, torch.Tensor]) -> None:
    """The RNG tensors have the shapes and value ranges their setters take (a Mersenne Twister's words)."""
    expected = {"rng.torch": (torch.get_rng_state().shape, torch.uint8), "rng.python": ((625,), torch.int64),
                "rng.numpy": ((624,), torch.int64)}
    for name, (shape, dtype) in expected.items():
        value = tensors[name]
        if value.shape != shape or value.dtype != dtype:
            raise ValueError(f"{name} is {str(value.dtype).removeprefix('torch.')} {list(value.shape)}, "
                             f"expected {str(dtype).removeprefix('torch.')} {list(shape)}")
        if name != "rng.torch" and not bool(((value >= 0) & (value < 1 << 32)).all()):
            raise ValueError(f"{name} holds values outside 32 bits")


# ---------------------------------------------------------------------------------------------- checking

def check_resumable(payload: dict, config, spec: dict, path: Path, resumable_changes: tuple[str, ...]) -> None:
    """InputError unless the checkpoint was written by a run with the same settings."""
    saved = payload["config"]
    names = {f.name for f in fields(config)}
    if set(saved) != names:
        raise InputError(f"checkpoint {path} has unknown or missing config keys "
                         f"({', '.join(sorted(set(saved) ^ names))}); delete it to start over")
    differ = [n for n in names if n not in resumable_changes and saved[n] != getattr(config, n)]
    differ += [key for key in ("arch", "d_in", "d_sae", "k") if payload["spec"].get(key) != spec.get(key)]
    if differ:
        raise InputError(f"checkpoint {path} was written with different settings ({', '.join(sorted(set(differ)))}); "
                         "resume with the original options or delete it")
    state = payload["state"]
    if not (0 <= state["step"] <= config.total_steps and state["position"] == state["step"] * config.batch):
        raise InputError(f"checkpoint {path} is inconsistent (step {state['step']} of {config.total_steps}, "
                         f"position {state['position']}); delete it to start over")


def check_tensors(payload: dict, sae, optimizer, path: Path) -> None:
    """InputError unless every tensor of the checkpoint fits `sae` and its freshly built `optimizer` exactly
    (names, shapes, dtypes) and the weights and moments are finite: load_state_dict would cast dtypes silently."""
    problems = _mismatches("sae.", payload["sae"], {k: (v.shape, v.dtype) for k, v in sae.state_dict().items()})
    params = [p for group in optimizer.param_groups for p in group["params"]]
    fresh = optimizer.state_dict()["param_groups"]
    saved = payload["optimizer"]["param_groups"]
    if [sorted(g) for g in saved] != [sorted(g) for g in fresh] or [g["params"] for g in saved] != \
            [g["params"] for g in fresh]:
        problems.append("optimizer param groups differ")
    for index, entries in payload["optimizer"]["state"].items():
        if not 0 <= index < len(params):
            problems.append(f"optimizer state of parameter {index} (there are {len(params)})")
            continue
        want = (params[index].shape, params[index].dtype)
        moments = {k: v for k, v in entries.items() if torch.is_tensor(v) and v.dim() > 0}
        problems += _mismatches(f"optimizer.{index}.", moments, {k: want for k in moments})
    last_fired = payload["state"]["last_fired"]
    if last_fired is not None and (last_fired.dtype != torch.int64 or last_fired.shape != (sae.cfg.d_sae,)):
        problems.append(f"state.last_fired {last_fired.dtype} {list(last_fired.shape)}")
    if problems:
        raise InputError(f"checkpoint {path} does not fit this dictionary: {'; '.join(problems[:4])}"
                         f"{f' and {len(problems) - 4} more' if len(problems) > 4 else ''}; delete it to start over")
    floats = [v for v in [*payload["sae"].values(), *(t for e in payload["optimizer"]["state"].values()
                                                      for t in e.values() if torch.is_tensor(t))]
              if v.is_floating_point()]
    if not all(bool(torch.isfinite(v).all()) for v in floats):
        raise InputError(f"checkpoint {path} holds NaN or infinite weights; delete it to start over")


def _mismatches(prefix: str, have: dict, want: dict) -> list[str]:
    problems = [f"unknown tensor {prefix}{k}" for k in sorted(set(have) - set(want))]
    problems += [f"missing tensor {prefix}{k}" for k in sorted(set(want) - set(have))]
    for key in sorted(set(have) & set(want)):
        shape, dtype = want[key]
        if have[key].shape != shape or have[key].dtype != dtype:
            problems.append(f"{prefix}{key} is {str(have[key].dtype).removeprefix('torch.')} "
                            f"{list(have[key].shape)}, expected {str(dtype).removeprefix('torch.')} {list(shape)}")
    return problems


def restore(payload: dict, sae, optimizer) -> None:
    """Load a checked payload's weights, optimizer state and RNG states (TrainState is the caller's)."""
    sae.load_state_dict(payload["sae"])
    optimizer.load_state_dict(payload["optimizer"])
    rng = payload["rng"]
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
