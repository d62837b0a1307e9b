"""`sparsescope train` killed with SIGKILL after a step, while writing a checkpoint, right before and right after its
commit: the store opens, the checkpoint left is whole, and `--resume` finishes with the weights, log and metrics of
an uninterrupted run, bit for bit."""
import json

import pytest
import torch
from safetensors.torch import load_file

from analysis.training import CHECKPOINT
from sae.training import load_checkpoint
from tests.fault_workspace import CACHE, TRAIN
from tests.helpers import cli_process, copy_workspace, error_line, run_cli, store_rows

pytestmark = pytest.mark.slow
VARYING = ("train_seconds", "train_tokens_per_s")
"""Metrics that measure the machine, not the dictionary."""


@pytest.fixture(scope="module")
def reference(fault_base, tmp_path_factory):
    from analysis.training import TrainRequest, train_in_workspace
    from store import Workspace

    root = copy_workspace(fault_base, tmp_path_factory.mktemp("reference") / "ws")
    train_in_workspace(Workspace(root), TrainRequest(arch="topk", activations=CACHE, name="tr", d_sae=64, k=4,
                                                     tokens=1536, batch=128, lr=1e-2, checkpoint_every=2),
                       progress=False)
    return root


def _trained(root):
    db = root / "sparsescope.duckdb"
    weights = load_file(root / "dictionaries" / "tr" / "sae_weights.safetensors")
    log = [row[2:] for row in store_rows(db, "training_log", "dictionary = 'tr'")]  # without the run id
    metrics = [row for row in store_rows(db, "dictionary_metrics", "dictionary = 'tr'") if row[1] not in VARYING]
    cfg = json.loads((root / "dictionaries" / "tr" / "cfg.json").read_text())
    dictionary = store_rows(db, "dictionaries", "name = 'tr'", root=root)
    return weights, log, metrics, cfg, [row[:-1] for row in dictionary]  # the id depends on insertion order


@pytest.mark.parametrize("point, step", [("train.step:5", 4), ("checkpoint.written:2", 2), ("train.commit", 12),
                                         ("train.committed", None)])
def test_a_killed_run_resumes_to_the_same_dictionary(fault_base, reference, tmp_path, monkeypatch, capsys,
                                                     point, step):
    root = copy_workspace(fault_base, tmp_path / "ws")
    killed = cli_process("train", *TRAIN, "--name", "tr", "-w", root, crash_at=point)
    assert killed.returncode == -9, killed.stderr
    runs = store_rows(root / "sparsescope.duckdb", "training_runs", "dictionary = 'tr'")  # the store opens
    assert [r[3] for r in runs] == ["finished" if step is None else "running"]
    if step is None:  # killed after the commit: the dictionary is there; the name is taken
        code, _, err = run_cli(monkeypatch, capsys, "train", *TRAIN, "--name", "tr", "-w", str(root))
        assert code == 2 and "already exists" in error_line(err)
    else:
        assert load_checkpoint(root / "checkpoints" / "tr" / CHECKPOINT)["state"]["step"] == step
        # killed while writing the next one: its temp file is there, never read as a checkpoint
        assert (root / "checkpoints" / "tr" / f".{CHECKPOINT}.tmp").exists() == (point == "checkpoint.written:2")
        code, _, err = run_cli(monkeypatch, capsys, "train", *TRAIN, "--name", "tr", "-w", str(root))
        assert code == 2 and "add --resume" in error_line(err)
        code, _, err = run_cli(monkeypatch, capsys, "train", *TRAIN, "--name", "tr", "--resume", "-w", str(root))
        assert code in (0, None), err
        assert not (root / "checkpoints" / "tr").exists()
    weights, log, metrics, cfg, row = _trained(root)
    want = _trained(reference)
    assert weights.keys() == want[0].keys() and all(torch.equal(weights[k], want[0][k]) for k in weights)
    assert (log, metrics, cfg, row) == want[1:]
    assert [r[3] for r in store_rows(root / "sparsescope.duckdb", "training_runs", "dictionary = 'tr'")] == \
        ["finished"]
