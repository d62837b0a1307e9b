"""sae.training: the loop learns, is deterministic, and a killed run resumes to the same dictionary."""
from dataclasses import replace

import numpy as np
import pytest
import torch

import sae.training as training
from sae.dictionaries import DictSpec
from sae.sources import FileSource
from sae.training import TrainConfig, check_resumable, load_checkpoint, save_checkpoint, train
from store.errors import InputError
from tests.factories import kill_training_at, sparse_activations, train_config

D_IN = 16  # sparse_activations' default width


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "acts.npy"
    np.save(path, sparse_activations())
    return FileSource(path)


def _spec(config: TrainConfig) -> DictSpec:
    return DictSpec(config.arch, D_IN, config.d_sae, k=config.k, l1=config.l1)


def _weights(result) -> dict:
    return {k: v.detach().clone() for k, v in result.sae.state_dict().items()}


@pytest.mark.parametrize("arch", ["topk", "mp"])
def test_training_decreases_loss_and_logs(source, arch):
    config = train_config(arch=arch, tokens=256 * (24 if arch == "topk" else 10))
    result = train(_spec(config), config, source, progress=False)
    log = result.state.log
    assert len(log) == config.total_steps and log[-1]["tokens"] == config.total_steps * config.batch
    first, last = np.mean([r["loss"] for r in log[:3]]), np.mean([r["loss"] for r in log[-3:]])
    assert last < 0.8 * first, (first, last)
    assert log[-1]["fvu"] < log[0]["fvu"]
    mean_norm = np.linalg.norm(sparse_activations()[:3800], axis=1).mean()
    assert result.state.scale == pytest.approx(np.sqrt(D_IN) / mean_norm, rel=0.05)


def test_same_seed_same_dictionary_other_seed_differs(source):
    config = train_config(tokens=256 * 6)
    a, b = train(_spec(config), config, source, progress=False), train(_spec(config), config, source, progress=False)
    for name, value in _weights(a).items():
        torch.testing.assert_close(value, _weights(b)[name], rtol=0, atol=0)
    c = train(_spec(config), replace(config, seed=1), source, progress=False)
    assert not torch.allclose(_weights(a)["W_dec"], _weights(c)["W_dec"])


@pytest.mark.parametrize("arch", ["topk", "codebook"])
def test_resume_after_a_kill_equals_an_uninterrupted_run(source, tmp_path, monkeypatch, arch):
    config = train_config(arch=arch, tokens=256 * 12, checkpoint_every=5)
    straight = train(_spec(config), config, source, progress=False)
    checkpoint = tmp_path / "ckpt" / "checkpoint.pt"
    kill_training_at(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        train(_spec(config), config, source, checkpoint=checkpoint, progress=False)
    monkeypatch.undo()
    payload = load_checkpoint(checkpoint)
    assert payload["state"]["step"] == 5 and payload["state"]["position"] == 5 * 256
    check_resumable(payload, replace(config, device=None), training.asdict_spec(_spec(config)), checkpoint)
    resumed = train(_spec(config), config, source, checkpoint=checkpoint, resume=payload, progress=False)
    assert resumed.state.tokens == straight.state.tokens and resumed.state.log == straight.state.log
    for name, value in _weights(straight).items():
        torch.testing.assert_close(_weights(resumed)[name], value, rtol=1e-5, atol=1e-6)


def test_checkpoint_is_atomic_and_corruption_is_one_clear_error(source, tmp_path):
    config = train_config(tokens=256 * 4, checkpoint_every=2)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    train(_spec(config), config, source, checkpoint=checkpoint, progress=False)
    assert [p.name for p in checkpoint.parent.iterdir()] == ["checkpoint.pt"]  # no temp file left behind
    payload = load_checkpoint(checkpoint)
    assert payload["state"]["step"] == 4
    with pytest.raises(InputError, match="different settings.*lr"):
        check_resumable(payload, replace(config, lr=5e-2), training.asdict_spec(_spec(config)), checkpoint)
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupted"):
        load_checkpoint(checkpoint)
    checkpoint.write_bytes(b"")
    with pytest.raises(InputError, match="truncated or corrupted"):
        load_checkpoint(checkpoint)
    with pytest.raises(InputError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "alien.pt").write_bytes(b"not a zip file at all")
    with pytest.raises(InputError, match="truncated or corrupted"):
        load_checkpoint(tmp_path / "alien.pt")
    save_checkpoint(tmp_path / "other.pt", torch.nn.Linear(1, 1), torch.optim.SGD([torch.zeros(1)], lr=1),
                    training.TrainState(run_id="r", scale=1.0), config, {})
    assert load_checkpoint(tmp_path / "other.pt")["state"]["run_id"] == "r"


@pytest.mark.parametrize("overrides, needle", [
    (dict(d_sae=0), "--d-sae must be a positive integer"), (dict(k=0), "--k must be between 1"),
    (dict(k=65), "--k must be between 1"), (dict(tokens=0), "--tokens must be positive"),
    (dict(batch=-1), "--batch must be positive"), (dict(lr=0.0), "--lr must be positive"),
    (dict(arch="relu", k=None, l1=-1.0), "--l1 must be"), (dict(lr=float("nan")), "--lr must be positive"),
])
def test_config_validation(overrides, needle):
    # d_sae, k and l1 are checked once, by the DictSpec the run trains; the rest by TrainConfig.
    with pytest.raises(ValueError, match=needle):
        _spec(train_config(**overrides))


def test_learning_rate_schedule():
    config = train_config(tokens=100 * 256, decay_fraction=0.2)
    assert config.total_steps == 100
    assert config.lr_at(0) == config.lr_at(79) == config.lr
    assert config.lr_at(90) == pytest.approx(config.lr / 2) and config.lr_at(100) == 0.0
