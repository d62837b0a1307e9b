"""Contract tests over every SparseScope architecture: shapes, sparsity, SAELens round trip, training."""
from __future__ import annotations

import json

import pytest
import torch
from sae_lens import SAE
from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY

import sae  # noqa: F401  - `import sae` must register the architectures
from sae.dictionaries import (
    DictSpec,
    arch_of,
    build_training_sae,
    init_from_sample,
    load_dictionary,
    save_dictionary,
    train_step,
    trainable,
)

TRAINED = tuple(arch.name for arch in trainable())
"""Architectures `train` takes (neurons are created from a model's weights: tests/unit/dictionaries/test_neurons.py)."""
K_ARCHITECTURES = tuple(arch.name for arch in trainable() if arch.default_k is not None)

D_IN, D_SAE, K = 16, 64, 4
# These tensors are tiny: a second intra-op thread only adds synchronisation, which on a busy machine makes
# each step ~10x slower.
pytestmark = pytest.mark.usefixtures("seed", "one_thread")


def synthetic(n: int, d_in: int = D_IN, n_true: int = 32, active: int = 3) -> torch.Tensor:
    """Sparse combinations of random unit directions plus a little noise, scaled to mean norm sqrt(d_in)."""
    directions = torch.nn.functional.normalize(torch.randn(n_true, d_in), dim=-1)
    ids = torch.stack([torch.randperm(n_true)[:active] for _ in range(n)])
    x = torch.einsum("na,nad->nd", 1 + torch.rand(n, active), directions[ids]) + 0.05 * torch.randn(n, d_in)
    return x * (d_in ** 0.5 / x.norm(dim=-1).mean())


def make(arch: str, hook_name: str = "", l1: float | None = None):
    return build_training_sae(DictSpec(arch, D_IN, D_SAE, k=K if arch in K_ARCHITECTURES else None, l1=l1,
                                       hook_name=hook_name, model_name="tiny"))


def trained(arch: str, steps: int = 10, hook_name: str = ""):
    model, data = make(arch, hook_name), synthetic(512)
    init_from_sample(model, data)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps):
        train_step(model, data[torch.randint(512, (128,))], optimizer, step, steps)
    return model, data


def test_every_architecture_is_registered_with_saelens():
    for name in ("sparsescope_mp", "sparsescope_codebook"):
        assert name in SAE_CLASS_REGISTRY
    for name in ("sparsescope_topk", "sparsescope_batchtopk", "sparsescope_mp", "sparsescope_codebook"):
        assert name in SAE_TRAINING_CLASS_REGISTRY


@pytest.mark.parametrize("arch", TRAINED)
def test_shapes_and_at_most_k_active(arch):
    model, data = trained(arch, steps=3)
    x = data[:64]
    acts, out = model.encode(x), model(x)
    assert acts.shape == (64, D_SAE) and out.shape == (64, D_IN)
    assert torch.isfinite(out).all()
    active = (acts != 0).sum(dim=-1)
    if arch == "batchtopk":
        assert int(active.sum()) <= K * 64  # k per token on average over the batch
    elif arch in K_ARCHITECTURES:
        assert int(active.max()) <= K and int(active.max()) > 0


@pytest.mark.parametrize("arch", TRAINED)
def test_save_load_round_trip_through_saelens(arch, tmp_path):
    model, data = trained(arch)
    scale, raw = 0.5, data[:64] / 0.5  # the model trained on raw * scale
    save_dictionary(model, tmp_path / "dict", activation_scale=scale)
    loaded = SAE.load_from_disk(tmp_path / "dict")
    assert arch_of(loaded).name == arch
    with torch.no_grad():
        if arch == "batchtopk":  # saved as JumpReLU with the learned threshold: a different encoder
            expected_acts = _jumprelu_reference(model, raw * scale) / scale
            assert torch.allclose(loaded.encode(raw), expected_acts, atol=1e-4)
        else:
            assert torch.allclose(loaded(raw), model(raw * scale) / scale, atol=1e-4)
            assert torch.equal(loaded.encode(raw) != 0, model.encode(raw * scale) != 0)
        save_dictionary(model, tmp_path / "again", activation_scale=scale)
        again = load_dictionary(tmp_path / "again")
        assert torch.equal(again.encode(raw), loaded.encode(raw))
        assert torch.equal(again(raw), loaded(raw))


def _jumprelu_reference(model, x):
    """What the BatchTopK model becomes at inference: its norm-scaled pre-activations above the threshold."""
    pre = ((x - model.b_dec) @ model.W_enc + model.b_enc) * model.W_dec.norm(dim=-1)
    return torch.where(pre > model.topk_threshold.float(), pre, 0)


@pytest.mark.parametrize("arch", TRAINED)
def test_train_step_decreases_the_loss(arch):
    # Sparsity coefficients sized for d_in = 16 (the defaults suit inputs with hundreds of dimensions).
    model, data = make(arch, l1={"relu": 0.1, "jumprelu": 0.01}.get(arch)), synthetic(1024)
    init_from_sample(model, data)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(50):
        out = train_step(model, data[torch.randint(1024, (256,))], optimizer, step, 50)
        losses.append(float(out.loss))
        assert out.fired.shape == (D_SAE,) and out.fired.dtype == torch.bool
        assert 0 <= out.fvu and out.l0 >= 0 and "mse_loss" in out.losses
    # Compared after the 5% sparsity warm-up, during which relu's and jumprelu's loss may rise.
    assert sum(losses[-5:]) < 0.8 * sum(losses[3:8]), losses


@pytest.mark.parametrize("arch", TRAINED)
def test_hook_z_dictionaries_take_head_shaped_inputs(arch, tmp_path):
    model, data = trained(arch, steps=2, hook_name="blocks.0.attn.hook_z")
    save_dictionary(model, tmp_path / "z")
    from sae_lens import SAE

    loaded = SAE.load_from_disk(tmp_path / "z")  # SAELens' own loader: the saved format splices into hook_z
    heads = data[:8].reshape(8, 4, 4)  # [N, n_heads, d_head], flattened head-major by the dictionary
    with torch.no_grad():
        out = loaded(heads)
        assert out.shape == heads.shape
        assert torch.equal(loaded.encode(heads), loaded.encode(heads.reshape(1, 8, 4, 4)).reshape(8, D_SAE))
        # ours reads the same activations as flat head-major rows, as every SparseScope caller passes them
        assert torch.equal(load_dictionary(tmp_path / "z").encode(heads.reshape(8, 16)), loaded.encode(heads))


def test_save_replaces_an_existing_dictionary_atomically(tmp_path):
    first, _ = trained("topk", steps=1)
    second, data = trained("relu", steps=1)
    save_dictionary(first, tmp_path / "d")
    save_dictionary(second, tmp_path / "d")
    assert arch_of(load_dictionary(tmp_path / "d")).name == "relu"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no staging or old folders left behind


def test_save_sweeps_a_killed_saves_staging_and_a_failed_save_leaves_none(tmp_path, monkeypatch):
    from tests.helpers import killed_staging

    model, _ = trained("topk", steps=1)
    killed = killed_staging(tmp_path, "d")
    killed.mkdir()
    (killed / "cfg.json").write_text("{half")
    save_dictionary(model, tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    weights = (tmp_path / "d" / "sae_weights.safetensors").read_bytes()

    def full_disk(self, path):
        (path / "cfg.json").write_text("{half")
        raise OSError("No space left on device")
    monkeypatch.setattr(type(model), "save_inference_model", full_disk)
    with pytest.raises(OSError):
        save_dictionary(model, tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert (tmp_path / "d" / "sae_weights.safetensors").read_bytes() == weights


def test_save_leaves_the_training_model_untouched(tmp_path):
    model, data = trained("mp", steps=2)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    save_dictionary(model, tmp_path / "d", activation_scale=3.0)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("kwargs, message", [
    (dict(arch="gated", d_in=16, d_sae=64), "unknown architecture 'gated'"),
    (dict(arch="topk", d_in=16, d_sae=4608, k=5000), "--k must be between 1 and --d-sae (4608), got 5000"),
    (dict(arch="topk", d_in=16, d_sae=64, k=0), "--k must be between 1 and --d-sae (64), got 0"),
    (dict(arch="mp", d_in=16, d_sae=64, k=-3), "--k must be between 1 and --d-sae (64), got -3"),
    (dict(arch="relu", d_in=16, d_sae=64, k=8), "--k does not apply to relu"),
    (dict(arch="topk", d_in=16, d_sae=64, l1=1.0), "--l1 does not apply to topk"),
    (dict(arch="relu", d_in=16, d_sae=64, l1=-1.0), "--l1 must be a non-negative number"),
    (dict(arch="relu", d_in=16, d_sae=0), "--d-sae must be a positive integer"),
    (dict(arch="relu", d_in=0, d_sae=8), "--d-in must be a positive integer"),
])
def test_bad_specs_raise_one_line_value_errors(kwargs, message):
    with pytest.raises(ValueError) as error:
        DictSpec(**kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_load_dictionary_reports_bad_folders(tmp_path):
    with pytest.raises(ValueError, match="no dictionary folder"):
        load_dictionary(tmp_path / "missing")
    model, _ = trained("topk", steps=1)
    save_dictionary(model, tmp_path / "d")
    (tmp_path / "d" / "sae_weights.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="cannot load the dictionary"):
        load_dictionary(tmp_path / "d")
    (tmp_path / "d" / "cfg.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_dictionary(tmp_path / "d")
    (tmp_path / "d" / "cfg.json").write_text(json.dumps({"architecture": "nonesuch", "d_in": 1, "d_sae": 1}))
    with pytest.raises(ValueError, match="unknown dictionary architecture 'nonesuch'"):
        load_dictionary(tmp_path / "d")
    (tmp_path / "d" / "sae_weights.safetensors").unlink()
    with pytest.raises(ValueError, match="missing sae_weights.safetensors"):
        load_dictionary(tmp_path / "d")


def test_mp_atoms_stay_unit_norm_and_sparsity_warms_up():
    model, _ = trained("mp", steps=5)
    assert torch.allclose(model.W_dec.norm(dim=-1), torch.ones(D_SAE), atol=1e-5)
    relu = make("relu")
    from sae.dictionaries.step import coefficients

    assert coefficients(relu, 0, 100)["l1"] == pytest.approx(5.0 / 5)
    assert coefficients(relu, 10, 100)["l1"] == pytest.approx(5.0)
