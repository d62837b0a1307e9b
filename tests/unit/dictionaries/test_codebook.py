"""Codebook autoencoder: top-k cosine codes, mean-of-codes output, straight-through, k-means, dead codes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sae_lens.saes.sae import TrainStepInput

from sae.dictionaries import (
    DictSpec,
    build_training_sae,
    codebook_code_ids,
    kmeans_init,
    replace_dead_codes,
    train_step,
)

D_IN, D_SAE, K = 16, 128, 4


pytestmark = pytest.mark.usefixtures("seed", "one_thread")


def codebook(k: int = K):
    return build_training_sae(DictSpec("codebook", D_IN, D_SAE, k=k))


def test_chosen_codes_are_the_top_k_by_cosine_and_the_output_is_their_mean():
    sae, x = codebook(), 3 * torch.randn(50, D_IN) + 2
    h = F.layer_norm(x, (D_IN,))  # no affine, eps 1e-5
    cosine = F.cosine_similarity(h[:, None, :], sae.W_dec[None, :, :], dim=-1)
    expected = cosine.topk(K, dim=-1).indices
    ids = codebook_code_ids(sae, x)
    assert torch.equal(ids, expected)
    with torch.no_grad():
        acts = sae.encode(x)
        assert torch.equal((acts > 0).sum(dim=-1), torch.full((50,), K))
        assert torch.allclose(acts[acts > 0], torch.tensor(1 / K))
        mean_code = sae.W_dec[ids].mean(dim=1)
        sigma = (x.var(dim=-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
        expected_out = mean_code * sigma + x.mean(dim=-1, keepdim=True)
        assert torch.allclose(sae.decode(acts), expected_out, atol=1e-5)
        assert torch.allclose(sae(x), expected_out, atol=1e-5)


def test_forward_is_straight_through_and_codes_learn_from_the_loss():
    sae, x = codebook(), torch.randn(32, D_IN, requires_grad=True)
    upstream = torch.randn(32, D_IN)
    (sae(x) * upstream).sum().backward()
    assert torch.allclose(x.grad, upstream)  # identity gradient to the input
    sae.zero_grad()
    out = sae.training_forward_pass(TrainStepInput(x.detach(), {}, None, 0, False))
    out.loss.backward()
    used = torch.zeros(D_SAE, dtype=torch.bool)
    used[codebook_code_ids(sae, x.detach()).reshape(-1)] = True
    row_has_grad = sae.W_dec.grad.abs().sum(dim=-1) > 0
    assert torch.equal(row_has_grad, used)
    assert set(out.losses) == {"mse_loss", "commitment_loss"}
    assert out.losses["commitment_loss"].item() == pytest.approx(0.25 * out.losses["mse_loss"].item(), rel=1e-5)


def test_decode_needs_the_statistics_of_its_inputs():
    sae = codebook()
    with pytest.raises(ValueError, match="call encode on the same inputs first"):
        sae.decode(torch.zeros(3, D_SAE))
    with torch.no_grad():
        acts = sae.encode(torch.randn(5, D_IN))
        acts[:, 0] = 1.0  # steering: switch a code on, decode with the same inputs' statistics
        assert sae.decode(acts).shape == (5, D_IN)


def test_dead_code_replacement_resets_only_unused_codes():
    sae = codebook()
    before = sae.W_dec.detach().clone()
    steps = torch.zeros(D_SAE, dtype=torch.long)
    steps[[3, 40, 99]] = 500
    recent = 5 * torch.randn(64, D_IN)
    reset = replace_dead_codes(sae, recent, steps, threshold_steps=200)
    assert sorted(reset.tolist()) == [3, 40, 99]
    changed = (sae.W_dec.detach() != before).any(dim=-1)
    assert sorted(torch.nonzero(changed).squeeze(1).tolist()) == [3, 40, 99]
    assert (steps == 0).all()
    h = F.layer_norm(recent, (D_IN,))
    nearest = torch.cdist(sae.W_dec.detach()[reset], h).min(dim=1).values
    assert (nearest < 0.1 * 4 * D_IN ** 0.5).all()  # an input plus noise of std 0.1


def test_train_step_replaces_dead_codes_and_resets_their_adam_moments():
    sae = build_training_sae(DictSpec("codebook", D_IN, D_SAE, k=1))
    sae.cfg.dead_code_steps = 2
    with torch.no_grad():
        sae.W_dec[5] = -100 * torch.ones(D_IN)  # far from LayerNorm'd inputs: never chosen
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-2)
    x = torch.randn(64, D_IN)
    for step in range(2):
        train_step(sae, x, optimizer, step, 10)
    assert sae.W_dec[5].abs().max() < 10  # reset to an input plus noise
    assert optimizer.state[sae.W_dec]["exp_avg"][5].abs().sum() == 0


def test_kmeans_initialisation_finds_the_clusters():
    centres = F.layer_norm(torch.randn(8, D_IN), (D_IN,))
    sample = centres[torch.randint(8, (2000,))] + 0.05 * torch.randn(2000, D_IN)
    sae = build_training_sae(DictSpec("codebook", D_IN, 32, k=1))  # more codes than clusters, as in use
    kmeans_init(sae, sample, iters=10)
    cosine = F.cosine_similarity(centres[:, None, :], sae.W_dec.detach()[None, :, :], dim=-1)
    assert (cosine.max(dim=1).values > 0.95).all()
