"""torchrun data parallel (gloo, 2 CPU processes) gives the dictionary a single process gives."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.factories import sparse_activations

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ARGS = ["train", "--activations", "{acts}", "--d-sae", "64", "--tokens", "2048", "--batch", "256",
        "--lr", "0.01"]


def _train(tmp_path: Path, launcher: list[str], arch: str, name: str) -> dict:
    acts = tmp_path / "acts.npy"
    if not acts.exists():
        np.save(acts, sparse_activations(3000))
    args = [a.format(acts=acts) for a in ARGS] + ["--arch", arch, "--name", name, "-w", str(tmp_path / name)]
    if arch != "relu":
        args += ["--k", "4"]
    env = os.environ | {"SPARSESCOPE_QUIET": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(f"dictionary {name}") == 1  # only rank 0 reports (and writes)
    return load_file(tmp_path / name / "dictionaries" / name / "sae_weights.safetensors")


@pytest.mark.parametrize("arch", ["relu", "topk", "mp", "codebook"])
def test_two_gloo_processes_equal_one_process(tmp_path, arch):
    single = _train(tmp_path, [sys.executable], arch, "single")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    ddp = _train(tmp_path, torchrun, arch, "ddp")
    assert single.keys() == ddp.keys()
    for key, value in single.items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-4, atol=1e-5)
    assert not (tmp_path / "ddp" / "checkpoints" / "ddp").exists()
