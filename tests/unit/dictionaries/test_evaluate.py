"""analysis.evaluate against brute-force computations on tiny cases."""
import math

import pytest
import torch
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig

from analysis.evaluate import ModelEval, activation_metrics
from sae.dictionaries import DictSpec, build_training_sae

HOOK = "blocks.0.hook_resid_post"


def _relu_sae(d_in=8, d_sae=16, seed=0):
    torch.manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
    with torch.no_grad():
        sae.W_enc.normal_()
        sae.W_dec.normal_(std=0.3)
        sae.b_enc.normal_(mean=-0.5)
        sae.b_dec.normal_()
    return sae


def test_activation_metrics_match_brute_force(seed):
    sae = _relu_sae()
    x = torch.randn(53, 8) * 2 + 1
    with torch.no_grad():
        acts = sae.encode(x)
        x_hat = sae.decode(acts)
    m = activation_metrics(sae, x, batch=7)  # several batches: sums must accumulate correctly
    fvu = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()  # ratio of sums, not a mean of ratios
    fired = (acts != 0).sum(0)
    assert m["fvu"] == pytest.approx(float(fvu), rel=1e-5)
    assert m["l0"] == pytest.approx(float((acts != 0).sum(-1).float().mean()))
    assert m["cos"] == pytest.approx(float(torch.cosine_similarity(x, x_hat, dim=-1).mean()), rel=1e-5)
    assert m["norm_ratio"] == pytest.approx(float((x_hat.norm(dim=-1) / x.norm(dim=-1)).mean()), rel=1e-5)
    assert m["dead"] == pytest.approx(float((fired == 0).float().mean()))
    assert m["dense"] == pytest.approx(float((fired / 53 > 0.1).float().mean()))
    assert m["eval_tokens"] == 53 and m["dense"] > 0
    hist = [v for k, v in m.items() if k.startswith("l0_hist:")]
    assert sum(hist) == pytest.approx(1.0)


def test_perfect_and_useless_reconstructions():
    sae = _relu_sae()
    x = torch.randn(40, 8)
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.b_dec.copy_(x.mean(0))  # predicting the mean explains no variance
    m = activation_metrics(sae, x)
    assert m["fvu"] == pytest.approx(1.0, rel=1e-5)


def test_mp_and_codebook_extras(seed):
    x = torch.randn(64, 8)
    mp = build_training_sae(DictSpec("mp", 8, 16, k=3))
    m = activation_metrics(mp, x)
    assert 0 < m["mp_steps"] <= 3 and m["l0"] <= 3
    assert sum(v for k, v in m.items() if k.startswith("mp_stop_")) == pytest.approx(1.0)
    codebook = build_training_sae(DictSpec("codebook", 8, 16, k=2))
    m = activation_metrics(codebook, x)
    with torch.no_grad():
        counts = (codebook.encode(x) != 0).sum(0).double()
    p = counts / counts.sum()
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    assert m["l0"] == 2 and m["code_usage"] == pytest.approx(float((counts > 0).double().mean()))
    assert m["code_perplexity"] == pytest.approx(math.exp(entropy), rel=1e-6)


class _Stub:
    """A 'dictionary' that reconstructs perfectly (identity) or returns zeros; records what it was given."""

    def __init__(self, zero: bool = False):
        self.zero, self.seen = zero, []

    def encode(self, x):
        self.seen.append(x.clone())
        return x

    def decode(self, acts):
        return torch.zeros_like(acts) if self.zero else acts


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(1, 257, (5, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("hook", [HOOK, "blocks.1.hook_resid_pre", "blocks.0.hook_mlp_out"])
def test_ce_recovered_is_one_for_a_perfect_and_zero_for_a_zero_reconstruction(tiny_model, tokens, hook):
    evaluator = ModelEval(tiny_model, hook, tokens, batch=2)
    with torch.no_grad():
        loss = tiny_model(tokens, return_type="loss")
    assert evaluator.ce_clean == pytest.approx(float(loss), rel=1e-5)
    assert evaluator.ce_zero != pytest.approx(evaluator.ce_clean)  # (a random model: either side)
    perfect = evaluator.evaluate(_Stub())
    assert perfect["ce_recovered"] == pytest.approx(1.0, abs=1e-5) and perfect["kl"] == pytest.approx(0, abs=1e-6)
    assert perfect["delta_ce"] == pytest.approx(0, abs=1e-5)
    zero = evaluator.evaluate(_Stub(zero=True))
    assert zero["ce_recovered"] == pytest.approx(0.0, abs=1e-5) and zero["kl"] > 0
    assert zero["ce_sae"] == pytest.approx(evaluator.ce_zero, rel=1e-6)
    reference = ModelEval(tiny_model, hook, tokens, batch=5)
    reference.resume_at = None  # the plain full forward with a hook gives the same numbers
    assert reference._spliced_run(None)[0] == pytest.approx(evaluator.ce_zero, rel=1e-5)


def test_hook_z_is_flattened_head_major(tiny_model, tokens):
    hook = "blocks.0.attn.hook_z"
    stub = _Stub()
    result = ModelEval(tiny_model, hook, tokens, batch=5).evaluate(stub)
    assert result["ce_recovered"] == pytest.approx(1.0, abs=1e-5)
    _, cache = tiny_model.run_with_cache(tokens, names_filter=hook)
    z = cache[hook]  # [b, p, h, dh]
    expected = z[:, 1:].reshape(5, 11, -1)  # position 0 stays clean
    torch.testing.assert_close(stub.seen[0], expected)
    assert torch.equal(expected[..., :16], z[:, 1:, 0])  # head 0 first: head-major
