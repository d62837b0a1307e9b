"""The fast matching-pursuit encoder selects SAELens' atoms, and its gradients are the unrolled loop's."""
from __future__ import annotations

import pytest
import torch
from sae_lens.saes.matching_pursuit_sae import (
    MatchingPursuitSAE,
    MatchingPursuitSAEConfig,
    MatchingPursuitTrainingSAE,
    MatchingPursuitTrainingSAEConfig,
)
from sae_lens.saes.sae import TrainStepInput

from sae.dictionaries import (
    MPSAE,
    STOP_REASONS,
    MPSAEConfig,
    MPTrainingSAE,
    MPTrainingSAEConfig,
    mp_encode_steps,
    pursuit,
)

D_IN, D_SAE, K = 32, 256, 12


pytestmark = pytest.mark.usefixtures("seed", "one_thread")


def unit_atoms() -> torch.Tensor:
    W = torch.randn(D_SAE, D_IN)
    return W / W.norm(dim=-1, keepdim=True)


def inputs(W: torch.Tensor, n: int) -> torch.Tensor:
    """Sparse combinations of atoms plus noise, off-centre like real activations."""
    atoms = torch.randint(D_SAE, (n, 4))
    return torch.einsum("na,nad->nd", 1 + torch.rand(n, 4), W[atoms]) + 0.2 * torch.randn(n, D_IN) + 0.3


def naive_sequences(sae_in: torch.Tensor, W: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The textbook loop, recording the atom chosen at each step: c = relu(r W^T), j = argmax, r -= a W[j]."""
    r, ids, coeffs = sae_in.clone(), [], []
    for _ in range(k):
        j = (r @ W.T).relu().max(dim=1).indices
        a = (r * W[j]).sum(-1).relu()
        r = r - a[:, None] * W[j]
        ids.append(torch.where(a > 0, j, -1))
        coeffs.append(a)
    return torch.stack(ids, 1), torch.stack(coeffs, 1)


def loaded_pair(W, b_dec, **ref_kwargs):
    ours = MPSAE(MPSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, **{k: v for k, v in ref_kwargs.items()
                                                            if k != "max_iterations"}))
    ref = MatchingPursuitSAE(MatchingPursuitSAEConfig(d_in=D_IN, d_sae=D_SAE, **ref_kwargs))
    for sae in (ours, ref):
        sae.load_state_dict({"W_dec": W, "b_dec": b_dec})
    return ours, ref


@pytest.mark.parametrize("kind", ["atom_mixtures", "gaussian"])
def test_fixed_k_selects_the_same_atom_sequences_as_the_unrolled_loop_and_saelens(kind):
    W, b_dec = unit_atoms(), 0.1 * torch.randn(D_IN)
    x = inputs(W, 4096) if kind == "atom_mixtures" else torch.randn(4096, D_IN)
    ours, ref = loaded_pair(W, b_dec, max_iterations=K, residual_threshold=0.0, stop_on_duplicate_support=False)
    with torch.no_grad():
        steps = mp_encode_steps(ours, x)
        ref_acts = ref.encode(x)
        naive_ids, naive_coeffs = naive_sequences(x - b_dec, W, K)
    naive_acts = pursuit.scatter_codes(naive_ids, naive_coeffs, D_SAE)
    assert torch.allclose(naive_acts, ref_acts, atol=1e-5)  # the reference loop is SAELens' loop
    same_sequence = (steps.atom_ids == naive_ids).all(dim=1).float().mean()
    assert same_sequence >= 0.999
    same_code = (((steps.feature_acts - ref_acts).abs() < 1e-4).all(dim=1)).float().mean()
    assert same_code >= 0.999
    assert (steps.n_steps == K).all() and (steps.stop_reason == 0).all()
    assert torch.allclose(pursuit.scatter_codes(steps.atom_ids, steps.step_coeffs, D_SAE), steps.feature_acts)


def test_adaptive_mode_follows_saelens_stopping_rules():
    W, b_dec = unit_atoms(), torch.zeros(D_IN)
    x = inputs(W, 2048)
    ours, ref = loaded_pair(W, b_dec, residual_threshold=0.5, stop_on_duplicate_support=True)
    with torch.no_grad():
        steps = mp_encode_steps(ours, x, adaptive=True)
        ref_acts = ref.encode(x)
    same_code = (((steps.feature_acts - ref_acts).abs() < 1e-4).all(dim=1)).float().mean()
    assert same_code >= 0.999
    residual = (x - ours.decode(steps.feature_acts)).norm(dim=-1)
    stopped_by = [STOP_REASONS[i] for i in steps.stop_reason.tolist()]
    assert all(r < 0.5 for r, why in zip(residual.tolist(), stopped_by) if why == "threshold")
    assert "threshold" in stopped_by and steps.n_steps.max() <= D_IN
    assert ((steps.atom_ids >= 0).sum(dim=1) <= steps.n_steps).all()


def test_training_gradients_equal_the_unrolled_loops():
    kwargs = dict(d_in=D_IN, d_sae=D_SAE, decoder_init_norm=1.0)
    ours = MPTrainingSAE(MPTrainingSAEConfig(k=K, **kwargs))
    ref = MatchingPursuitTrainingSAE(MatchingPursuitTrainingSAEConfig(
        max_iterations=K, residual_threshold=0.0, stop_on_duplicate_support=False, **kwargs))
    with torch.no_grad():
        ours.b_dec.normal_(0, 0.1)
    ref.load_state_dict(ours.state_dict())
    x = inputs(ours.W_dec.detach(), 256)
    results = []
    for sae in (ours, ref):
        out = sae.training_forward_pass(TrainStepInput(x, {}, None, 0, False))
        out.loss.backward()
        results.append((out.loss.item(), {name: p.grad.clone() for name, p in sae.named_parameters()}))
    (loss, grads), (ref_loss, ref_grads) = results
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for name, grad in ref_grads.items():
        assert torch.allclose(grads[name], grad, rtol=1e-4, atol=1e-5 * grad.abs().max().item()), name


def test_inference_encode_is_differentiable_like_the_unrolled_loop():
    W = unit_atoms()
    x = inputs(W, 64)
    ours, ref = loaded_pair(W, torch.zeros(D_IN), max_iterations=K, residual_threshold=0.0,
                            stop_on_duplicate_support=False)
    grads = []
    for sae in (ours, ref):
        leaf = x.clone().requires_grad_()
        sae(leaf).pow(2).sum().backward()
        grads.append(leaf.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-4)


def test_without_the_gram_matrix_the_codes_are_the_same(monkeypatch):
    W, b_dec = unit_atoms(), torch.zeros(D_IN)
    x = inputs(W, 512)
    ours, _ = loaded_pair(W, b_dec)
    with torch.no_grad():
        with_gram = ours.encode(x)
        monkeypatch.setattr(pursuit, "GRAM_MAX_BYTES", 0)
        ours.__dict__.pop("_gram_cache", None)
        without = ours.encode(x)
    assert ((with_gram - without).abs() < 1e-4).all(dim=1).float().mean() >= 0.99


def test_the_cached_gram_matrix_follows_weight_edits():
    W = unit_atoms()
    x = inputs(W, 64)
    ours, _ = loaded_pair(W, torch.zeros(D_IN))
    with torch.no_grad():
        ours.encode(x)
        ours.W_dec.data[:, :] = unit_atoms()  # an edit through .data does not bump the version counter
        naive_ids, _ = naive_sequences(x, ours.W_dec, K)
        assert (mp_encode_steps(ours, x).atom_ids == naive_ids).all(dim=1).float().mean() >= 0.98


def test_block_argmax_returns_the_first_maximum():
    c = torch.randn(7, 128)
    c[0, 5] = c[0, 70] = 100.0
    index, value = pursuit._block_argmax(c)
    assert index[0] == 5 and torch.equal(index, c.argmax(dim=1)) and torch.equal(value, c.amax(dim=1))


def test_dictionary_sizes_off_the_block_grid():
    W = torch.nn.functional.normalize(torch.randn(200, D_IN), dim=-1)  # 200 is not a multiple of 64
    x = torch.randn(256, D_IN)
    found = pursuit.pursue(x, W, pursuit.gram(W), K)
    naive_ids, naive_coeffs = naive_sequences(x, W, K)
    assert (found.atom_ids == naive_ids).all(dim=1).float().mean() >= 0.99
    assert torch.allclose(found.coeffs, naive_coeffs, atol=1e-4)


def test_chunks_on_two_threads_give_the_same_codes_and_restore_the_thread_count():
    W = unit_atoms()
    x = inputs(W, 600)
    torch.set_num_threads(2)  # the fixture restores the original count
    threaded = pursuit.pursue(x, W, pursuit.gram(W), K)
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    serial = pursuit.pursue(x, W, pursuit.gram(W), K)
    assert torch.equal(threaded.atom_ids, serial.atom_ids)
    assert torch.allclose(threaded.coeffs, serial.coeffs)
