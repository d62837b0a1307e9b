"""sae.checkpoint: safetensors + JSON, nothing unpickled, every key, shape and dtype checked on load."""
import json
import os

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sae.dictionaries import DictSpec, build_training_sae
from sae.sources import FileSource
from sae.training import check_checkpoint, load_checkpoint, train
from store.errors import InputError
from tests.factories import kill_training_at, sparse_activations, train_config

D_IN = 16


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "acts.npy"
    np.save(path, sparse_activations())
    return FileSource(path)


@pytest.fixture
def saved(source, tmp_path):
    """(config, spec, checkpoint path) of a short run checkpointed at its end."""
    config = train_config(tokens=256 * 4, checkpoint_every=2)
    spec = DictSpec(config.arch, D_IN, config.d_sae, k=config.k)
    path = tmp_path / "run" / "checkpoint.safetensors"
    train(spec, config, source, checkpoint=path, progress=False)
    return config, spec, path


def _rewrite(path, tensors=None, header=None):
    """Write the checkpoint at `path` again with some tensors or header fields changed."""
    with safe_open(str(path), "pt") as handle:
        meta = json.loads(handle.metadata()["sparsescope"])
    all_tensors = load_file(path) | (tensors or {})
    save_file({k: v for k, v in all_tensors.items() if v is not None}, path,
              metadata={"sparsescope": json.dumps(meta | (header or {}))})


def _one_line_error(fn, *args) -> str:
    with pytest.raises(InputError) as info:
        fn(*args)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_checkpoint_is_safetensors_with_a_json_header(saved):
    config, spec, path = saved
    with safe_open(str(path), "pt") as handle:
        header = json.loads(handle.metadata()["sparsescope"])
        names = set(handle.keys())
    assert header["format"] == "sparsescope-checkpoint" and header["config"]["d_sae"] == config.d_sae
    assert header["state"]["step"] == 4 and header["optimizer"]["scalars"]["1"]["step"] == {"value": 4.0,
                                                                                          "dtype": "float32"}
    assert {"sae.W_dec", "optimizer.1.exp_avg", "optimizer.1.exp_avg_sq", "state.last_fired", "rng.torch",
            "rng.python", "rng.numpy"} <= names
    payload = load_checkpoint(path)
    check_checkpoint(payload, spec, config, path)
    assert payload["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)  # a tuple again, as Adam made it


def test_resume_is_bit_identical(source, tmp_path, monkeypatch):
    config = train_config(tokens=256 * 10, checkpoint_every=4)
    spec = DictSpec(config.arch, D_IN, config.d_sae, k=config.k)
    straight = train(spec, config, source, progress=False)
    path = tmp_path / "c.safetensors"
    kill_training_at(monkeypatch, 6)
    with pytest.raises(KeyboardInterrupt):
        train(spec, config, source, checkpoint=path, progress=False)
    monkeypatch.undo()
    resumed = train(spec, config, source, checkpoint=path, resume=load_checkpoint(path), progress=False)
    for name, value in straight.sae.state_dict().items():
        assert torch.equal(resumed.sae.state_dict()[name], value), name
    assert torch.equal(resumed.state.last_fired, straight.state.last_fired)


def test_sigint_stops_between_steps_with_a_checkpoint_that_resumes_bit_identical(source, tmp_path, monkeypatch):
    """A cancel from the Jobs page (SIGINT) lets the step in progress finish, checkpoints, and says so."""
    import signal

    import sae.dictionaries as dictionaries
    from sae.dictionaries.step import train_step

    config = train_config(tokens=256 * 10, checkpoint_every=100)  # no periodic checkpoint before the stop
    spec = DictSpec(config.arch, D_IN, config.d_sae, k=config.k)
    straight = train(spec, config, source, progress=False)

    def interrupted_inside(sae, batch, optimizer, at, total_steps):
        if at == 5:
            os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of step 5
        return train_step(sae, batch, optimizer, at, total_steps)

    monkeypatch.setattr(dictionaries, "train_step", interrupted_inside)
    before = signal.getsignal(signal.SIGINT)  # ignored where the suite runs in the background (nohup, CI)
    path = tmp_path / "run" / "checkpoint.safetensors"
    with pytest.raises(KeyboardInterrupt, match="stopped at step 6 of 10; its checkpoint is kept"):
        train(spec, config, source, checkpoint=path, progress=False)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is before  # training put back the handler it found
    payload = load_checkpoint(path)
    assert payload["state"]["step"] == 6
    resumed = train(spec, config, source, checkpoint=path, resume=payload, progress=False)
    for name, value in straight.sae.state_dict().items():
        assert torch.equal(resumed.sae.state_dict()[name], value), name


def test_a_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "checkpoint.safetensors"
    torch.save({"version": 1, "payload": Evil()}, path)  # what the old, unpickled format would have run
    assert "truncated or corrupted" in _one_line_error(load_checkpoint, path)
    assert not marker.exists()


@pytest.mark.parametrize("change, needle", [
    (dict(tensors={"sae.W_evil": torch.zeros(2)}), "unknown tensor sae.W_evil"),
    (dict(tensors={"sae.W_dec": torch.zeros(3, 3)}), "sae.W_dec is float32 [3, 3], expected float32"),
    (dict(tensors={"sae.W_dec": None}), "missing tensor sae.W_dec"),
    (dict(tensors={"optimizer.1.exp_avg": torch.zeros(4, dtype=torch.float64)}), "optimizer.1.exp_avg is float64"),
    (dict(tensors={"state.last_fired": torch.zeros(3, dtype=torch.int64)}), "state.last_fired"),
    (dict(tensors={"rng.torch": torch.zeros(5, dtype=torch.uint8)}), "rng.torch is uint8 [5]"),
    (dict(header={"extra": 1}), "unknown keys"),
    (dict(header={"version": 1}), "is not a SparseScope v2 checkpoint"),
    (dict(tensors={"sae.b_dec": torch.full((D_IN,), float("nan"))}), "NaN or infinite"),
])
def test_tampering_is_one_clear_error(saved, change, needle):
    config, spec, path = saved
    _rewrite(path, **change)

    def load_and_check():
        check_checkpoint(load_checkpoint(path), spec, config, path)

    assert needle in _one_line_error(load_and_check)


def test_state_and_config_keys_are_checked(saved):
    config, spec, path = saved
    with safe_open(str(path), "pt") as handle:
        header = json.loads(handle.metadata()["sparsescope"])
    _rewrite(path, header={"state": header["state"] | {"evil": 1}})
    assert "unknown or missing state keys (evil)" in _one_line_error(
        check_checkpoint, load_checkpoint(path), spec, config, path)
    _rewrite(path, header={"state": header["state"], "config": header["config"] | {"evil": 1}})
    assert "unknown or missing config keys (evil)" in _one_line_error(
        check_checkpoint, load_checkpoint(path), spec, config, path)
    _rewrite(path, header={"config": header["config"], "state": header["state"] | {"step": 99}})
    assert "inconsistent" in _one_line_error(check_checkpoint, load_checkpoint(path), spec, config, path)


def test_a_checkpoint_of_another_dictionary_does_not_fit(saved):
    config, spec, path = saved
    other = DictSpec(config.arch, D_IN, config.d_sae * 2, k=config.k)
    from dataclasses import replace

    with pytest.raises(InputError, match="different settings.*d_sae"):
        check_checkpoint(load_checkpoint(path), other, replace(config, d_sae=other.d_sae), path)
    sae = build_training_sae(spec, device="cpu")
    assert set(load_checkpoint(path)["sae"]) == set(sae.state_dict())
