"""The sparse TopK / BatchTopK training paths give SAELens' numbers; the sparse kernels' gradients are exact."""
from __future__ import annotations

import pytest
import torch
from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
from sae_lens.saes.sae import TrainStepInput
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

from sae.dictionaries import (
    SparseBatchTopKTrainingSAE,
    SparseBatchTopKTrainingSAEConfig,
    SparseTopKTrainingSAE,
    SparseTopKTrainingSAEConfig,
)
from sae.dictionaries.sparse_ops import gather_encode, pairs_from_flat, pairs_from_topk, sparse_decode

D_IN, D_SAE, N, K = 32, 256, 128, 8
PAIRS = [
    (SparseTopKTrainingSAE, SparseTopKTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig),
    (SparseBatchTopKTrainingSAE, SparseBatchTopKTrainingSAEConfig, BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig),
]
pytestmark = pytest.mark.usefixtures("seed", "one_thread")  # tiny tensors: a second thread only adds sync


def twins(ours_cls, ours_cfg, ref_cls, ref_cfg, rescale: bool):
    """Our SAE and SAELens' with identical (non-trivial) weights."""
    kwargs = dict(d_in=D_IN, d_sae=D_SAE, k=K, aux_loss_coefficient=0.5, rescale_acts_by_decoder_norm=rescale)
    ours, ref = ours_cls(ours_cfg(**kwargs)), ref_cls(ref_cfg(**kwargs))
    with torch.no_grad():
        ours.b_dec.normal_()
        ours.b_enc.normal_(0, 0.1)
        ours.W_dec.mul_(torch.rand(D_SAE, 1) + 0.5)  # unequal decoder norms exercise the rescaling
    state = ours.state_dict()
    state.pop("steps_since_fired")
    ref.load_state_dict(state)
    return ours, ref


def forward_backward(sae, x, dead):
    output = sae.training_forward_pass(TrainStepInput(x, {}, dead, 0, False))
    output.loss.backward()
    return output, {name: p.grad.clone() for name, p in sae.named_parameters()}


@pytest.mark.parametrize("classes", PAIRS, ids=["topk", "batchtopk"])
@pytest.mark.parametrize("dead_fraction", [0.0, 0.3])
@pytest.mark.parametrize("rescale", [True, False])
def test_sparse_path_matches_saelens_loss_and_gradients(classes, dead_fraction, rescale):
    ours, ref = twins(*classes, rescale=rescale)
    x = 2 * torch.randn(N, D_IN)
    dead = torch.rand(D_SAE) < dead_fraction if dead_fraction else None
    out, grads = forward_backward(ours, x, dead)
    ref_out, ref_grads = forward_backward(ref, x, dead)
    assert abs(out.loss.item() - ref_out.loss.item()) <= 1e-4 * abs(ref_out.loss.item())
    for name, value in ref_out.losses.items():
        assert out.losses[name].item() == pytest.approx(value.item(), rel=1e-4, abs=1e-6)
    if dead_fraction:
        assert out.losses["auxiliary_reconstruction_loss"].item() > 0
    for name, grad in ref_grads.items():
        assert torch.allclose(grads[name], grad, rtol=1e-4, atol=1e-5 * grad.abs().max().item()), name
    assert torch.allclose(out.sae_out, ref_out.sae_out, atol=1e-4)
    assert torch.equal(out.feature_acts.to_dense() > 0, ref_out.feature_acts > 0)
    if hasattr(ref, "topk_threshold"):
        assert ours.topk_threshold.item() == pytest.approx(ref.topk_threshold.item(), rel=1e-6)


def test_hooks_fall_back_to_the_dense_path():
    ours, _ = twins(*PAIRS[0], rescale=True)
    seen = []
    ours.hook_sae_acts_post.add_hook(lambda acts, hook: seen.append(acts.shape))
    ours.training_forward_pass(TrainStepInput(torch.randn(N, D_IN), {}, None, 0, False))
    assert seen == [(N, D_SAE)]


def test_sparse_kernels_pass_gradcheck():
    d_in, d_sae, n, k = 5, 12, 6, 3
    pairs = pairs_from_topk(torch.stack([torch.randperm(d_sae)[:k] for _ in range(n)]), d_sae)
    W_dec = torch.randn(d_sae, d_in, dtype=torch.float64, requires_grad=True)
    coef = torch.randn(n * k, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c, w: sparse_decode(c, w, pairs), (coef, W_dec))

    x = torch.randn(n, d_in, dtype=torch.float64)
    params = [torch.randn(*shape, dtype=torch.float64, requires_grad=True)
              for shape in ((d_in,), (d_in, d_sae), (d_sae,), (d_sae,))]

    def encode(b_dec, W_enc, b_enc, scale):
        values = (((x - b_dec) @ W_enc + b_enc) * scale)[pairs.rows, pairs.cols]
        return gather_encode(values.detach(), x, b_dec, W_enc, b_enc, scale, pairs)

    assert torch.autograd.gradcheck(encode, params)


def test_flat_pairs_cover_a_variable_number_of_features_per_token():
    flat = torch.tensor([0 * 10 + 3, 0 * 10 + 7, 2 * 10 + 1])  # token 0: features 3, 7; token 1: none; token 2: 1
    pairs = pairs_from_flat(flat, n_tokens=3, d_sae=10)
    W = torch.randn(10, 4)
    out = sparse_decode(torch.tensor([1.0, 2.0, 3.0]), W, pairs)
    assert torch.allclose(out, torch.stack([W[3] + 2 * W[7], torch.zeros(4), 3 * W[1]]))
