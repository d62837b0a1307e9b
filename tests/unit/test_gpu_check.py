"""bench/gpu_check.py on a machine without a GPU: it says so in one line and exits 0, and its comparison runs for
real CPU against CPU with another thread count, so the code `make gpu-check` runs on CUDA is not dead here."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_without_cuda_one_line_and_exit_0(gpu_check, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("sys.argv", ["gpu_check.py"])
    assert gpu_check.main() == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["gpu"] is False and "no GPU found" in line


def test_comparison_tolerances_and_row_shares(gpu_check):
    compare = gpu_check.compare_records
    ref = {"heads.x": np.ones(4), "train.topk.fvu": 0.5, "mp.atoms": np.arange(1000).reshape(500, 2),
           "steer.default_ids": [[1, 2], [3, 4]]}
    assert compare(ref, dict(ref)) == ([], {k: 0.0 for k in ref})
    atoms = ref["mp.atoms"].copy()
    atoms[0, 1] = -1  # one row in 500 chose another atom: within MIN_SAME
    near = ref | {"heads.x": ref["heads.x"] + 5e-5, "train.topk.fvu": 0.6, "mp.atoms": atoms}
    assert compare(ref, near)[0] == []
    atoms[1:3, 0] = -1  # three rows in 500: too many
    far = ref | {"heads.x": ref["heads.x"] + 1e-2, "mp.atoms": atoms, "steer.default_ids": [[1, 2], [3, 5]]}
    failures, diffs = compare(ref, far | {"extra": 1.0})
    assert [f.split(":")[0] for f in failures] == ["extra", "heads.x", "mp.atoms", "steer.default_ids"]
    assert diffs["mp.atoms"] == pytest.approx(3 / 500) and diffs["steer.default_ids"] == 0.5
    assert compare({"a": np.array([1.0, np.nan])}, {"a": np.array([1.0, 2.0])})[0] == ["a: differs by inf"]


def test_cpu_against_cpu_with_another_thread_count(gpu_check):
    size = gpu_check.Size(contexts=8, ctx=16, train_tokens=512)
    result = gpu_check.check("cpu", "cpu", size, threads=(2, 1), watch=True)
    assert result["ok"], (result["failures"], result["watch_problems"])
    assert set(result["seconds"]["device"]) == set(gpu_check.STAGES) == {
        "cache", "train", "analyse", "mp", "steer", "heads", "ui"}
    json.dumps(result)  # one JSON line
