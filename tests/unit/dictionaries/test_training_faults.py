"""Training jobs that fail or collide: a name is reserved by one process at a time, a failure after training
keeps the checkpoint and says why in the run's row, and bad corpora are refused before anything is written."""
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sae_lens import SAE

import analysis.training as training
import sae.training
from analysis.corpora import add_corpus
from analysis.training import LOCK, TrainRequest, plan_training, train_dictionary
from store import InputError
from store.dictionaries import KILLED, get_run, list_dictionaries, start_run, unfinished_runs
from tests.factories import sparse_activations

ROOT = Path(__file__).resolve().parents[3]
FAST = dict(d_sae=64, k=4, tokens=1024, batch=256, lr=1e-2)
HOLD = ("import sys, time\nfrom store.locks import reserve\n"
        "reserve(sys.argv[1], 'x')\nprint('held', flush=True)\ntime.sleep(120)\n")


@pytest.fixture
def acts(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, sparse_activations(2000))
    return path


def _runs(con) -> list[tuple]:
    return con.execute("SELECT dictionary, status, reason FROM training_runs ORDER BY started").fetchall()


def test_a_name_in_training_elsewhere_is_refused_at_once(con, ws, acts):
    lock = ws.root / "checkpoints" / "r" / LOCK
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t = time.monotonic()
        with pytest.raises(InputError, match=f"dictionary 'r' is in use by another process \\(pid {holder.pid}\\)"):
            plan_training(ws, con, TrainRequest(arch="topk", activations=str(acts), name="r", **FAST))
        assert time.monotonic() - t < 2 and _runs(con) == []
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        holder.wait()
    row, _ = train_dictionary(ws, con, TrainRequest(arch="topk", activations=str(acts), name="r", **FAST),
                              progress=False)
    assert row.name == "r" and not (ws.root / "checkpoints" / "r").exists()


def test_a_failure_after_training_keeps_the_checkpoint_and_the_reason(con, ws, acts, monkeypatch):
    req = TrainRequest(arch="topk", activations=str(acts), name="f", **FAST)  # 4 steps, checkpoint_every 500

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation broke\nsecond line")

    monkeypatch.setattr(training, "evaluate_dictionary", broken)
    with pytest.raises(RuntimeError):
        train_dictionary(ws, con, req, progress=False)
    run = get_run(con, "f")
    assert (run["status"], run["reason"]) == ("failed", "RuntimeError: evaluation broke")
    assert unfinished_runs(con) == [dict(dictionary="f", run_id=run["run_id"], status="failed",
                                         reason="RuntimeError: evaluation broke")]
    checkpoint = ws.root / "checkpoints" / "f" / training.CHECKPOINT
    assert sae.training.load_checkpoint(checkpoint)["state"]["step"] == 4  # the whole run, not lost
    assert not (ws.root / "checkpoints" / "f" / LOCK).exists()  # released
    monkeypatch.undo()
    with pytest.raises(InputError, match="add --resume"):
        plan_training(ws, con, req)
    row, _ = train_dictionary(ws, con, TrainRequest(**(req.__dict__ | {"resume": True})), progress=False)
    straight, _ = train_dictionary(ws, con, TrainRequest(**(req.__dict__ | {"name": "g"})), progress=False)
    assert torch.equal(SAE.load_from_disk(row.path).W_dec, SAE.load_from_disk(straight.path).W_dec)
    assert get_run(con, "f")["status"] == "finished" and get_run(con, "f")["reason"] is None


def test_a_run_left_running_by_a_dead_process_is_marked_failed(con, ws, acts):
    start_run(con, "d", "dead-run", {})
    train_dictionary(ws, con, TrainRequest(arch="topk", activations=str(acts), name="d", **FAST), progress=False)
    assert ("d", "failed", KILLED) in _runs(con) and ("d", "finished", None) in _runs(con)


def test_default_runs_checkpoint_by_time(acts, tmp_path, monkeypatch):
    from sae.dictionaries import DictSpec
    from sae.sources import FileSource
    from tests.factories import train_config

    saved = []
    monkeypatch.setattr(sae.training, "save_checkpoint", lambda path, sae, opt, state, *a: saved.append(state.step))
    config = train_config(tokens=256 * 6, checkpoint_every=500)
    spec = DictSpec("topk", 16, 64, k=4)
    sae.training.train(spec, config, FileSource(acts), checkpoint=tmp_path / "c", progress=False)
    assert saved == [6]  # fewer steps than checkpoint_every: still the final state
    saved.clear()
    monkeypatch.setattr(sae.training, "CHECKPOINT_SECONDS", 0.0)
    sae.training.train(spec, config, FileSource(acts), checkpoint=tmp_path / "c", progress=False)
    assert saved == [1, 2, 3, 4, 5, 6]


def test_streaming_a_corpus_longer_than_the_model_reads_is_refused_in_planning(tiny_model, con, ws, tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("".join(f"Line {i} of a long corpus.\n" for i in range(3000)))
    add_corpus(con, "long", str(src), "tiny-random", ctx=512)  # tiny-random reads 256 tokens
    req = TrainRequest(arch="topk", model="tiny-random", hook="blocks.0.hook_resid_post", corpus="long",
                       name="s", **FAST)
    with pytest.raises(InputError, match="contexts of 512 tokens, more than tiny-random reads \\(256\\)"):
        train_dictionary(ws, con, req, lm=tiny_model, progress=False)
    assert _runs(con) == [] and list_dictionaries(con) == [] and not (ws.root / "checkpoints" / "s").exists()
