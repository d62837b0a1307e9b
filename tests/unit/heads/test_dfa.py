"""Attention-output dictionaries: head attribution weights and direct feature attribution (DFA)."""
import numpy as np
import pytest
import torch

from analysis.heads.dfa import (
    dictionary_layer,
    feature_dfa,
    feature_head_weights,
    feature_heads_table,
    head_attribution,
    is_attention_hook,
)
from store.errors import InputError
from tests.factories import dict_spec, seeded_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


PROMPT = "hello there, hello again"


def tiny(**overrides):
    model = seeded_tiny(**overrides)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("b_V", "b_Q", "b_K", "b_O")):  # non-zero biases, b_V included, make the test honest
                param.normal_(0, 0.5)
    return model


def attention_sae(d_in: int, layer: int = 1, d_sae: int = 24, apply_b_dec: bool = True, arch: str = "standard"):
    from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    meta = SAEMetadata(hook_name=f"blocks.{layer}.attn.hook_z")
    if arch == "topk":
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=4, apply_b_dec_to_input=apply_b_dec, metadata=meta))
    else:
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=apply_b_dec, metadata=meta))
    torch.manual_seed(1)
    with torch.no_grad():
        for param in sae.parameters():
            param.normal_(0, 0.3)
    return sae


@pytest.mark.parametrize("overrides, apply_b_dec", [({}, True), ({}, False), ({"n_key_value_heads": 2}, True),
                                                    ({"n_key_value_heads": 1}, True)])
def test_dfa_sums_to_the_pre_activation_minus_its_bias_terms(overrides, apply_b_dec):
    model = tiny(**overrides)
    sae = attention_sae(model.cfg.n_heads * model.cfg.d_head, apply_b_dec=apply_b_dec)
    captured = {}
    sae.hook_sae_acts_pre.add_hook(lambda x, hook: captured.__setitem__("pre", x.detach().clone()))
    features = [0, 5, 11, 23]
    result = feature_dfa(model, sae, PROMPT, dest=-3, features=features)
    n_pos = len(result.tokens)
    assert result.dfa.shape == (4, model.cfg.n_heads, n_pos) and result.dest == n_pos - 3
    np.testing.assert_allclose(result.dfa.sum((1, 2)), result.z_term, atol=1e-4)
    # SAELens' own encoder pre-activation (its hook) is the reference for z_term + bias
    np.testing.assert_allclose(result.pre_activation, captured["pre"][0, features].numpy(), atol=1e-4)
    expected_bias = sae.b_enc.detach()[features] - (sae.b_dec.detach() @ sae.W_enc.detach()[:, features]
                                                      if apply_b_dec else 0.0)
    np.testing.assert_allclose(result.bias, expected_bias.numpy(), atol=1e-5)
    assert np.abs(result.dfa[:, :, n_pos - 2:]).max() == 0  # sources after the destination get nothing


def test_dfa_under_gqa_uses_the_kv_group_values():
    """With GQA the value of query head h is hook_v's head h // group; recompute one entry by hand."""
    model = tiny(n_key_value_heads=2)
    sae = attention_sae(model.cfg.n_heads * model.cfg.d_head)
    result = feature_dfa(model, sae, PROMPT, dest=6, features=[3])
    assert result.kv_groups == [0, 0, 1, 1]
    with torch.inference_mode():
        _, cache = model.run_with_cache(model.to_tokens(PROMPT))
    v = cache["blocks.1.attn.hook_v"][0]  # (src, kv_head, d_head)
    assert v.shape[1] == 2
    a = cache["blocks.1.attn.hook_pattern"][0]  # (head, dest, src)
    w = sae.W_enc.detach()[:, 3].reshape(4, -1)  # (head, d_head)
    head, src = 3, 4
    expected = a[head, 6, src] * (v[src, 1] @ w[head])
    assert result.dfa[0, head, src] == pytest.approx(float(expected), abs=1e-5)


def test_default_features_are_the_most_active_and_topk_dictionaries_work():
    model = tiny()
    sae = attention_sae(64, arch="topk")
    result = feature_dfa(model, sae, PROMPT, top=3)
    assert len(result.features) == 3
    assert np.all(np.diff(result.activation) <= 0)
    np.testing.assert_allclose(result.dfa.sum((1, 2)), result.z_term, atol=1e-4)


def test_head_attribution_weights_sum_to_one_and_find_a_one_head_feature():
    sae = attention_sae(64)
    with torch.no_grad():
        sae.W_dec[7] = 0.0
        sae.W_dec[7, 32:48] = 1.0  # head 2's block (d_head 16)
        sae.W_dec[8] = 0.0  # a zero row gets uniform weights, not NaN
    weights = head_attribution(sae, 4)
    assert weights.shape == (24, 4)
    np.testing.assert_allclose(weights.sum(-1).numpy(), 1.0, atol=1e-6)
    assert feature_head_weights(sae, 4, 7) == pytest.approx([0.0, 0.0, 1.0, 0.0])
    assert feature_head_weights(sae, 4, 8) == pytest.approx([0.25] * 4)
    table = feature_heads_table(sae, 4)
    assert table.num_rows == 24 * 4 and table.column_names == ["feature", "head", "weight"]


def test_dfa_rejects_what_it_cannot_attribute():
    model = tiny()
    assert is_attention_hook("blocks.1.attn.hook_z") and not is_attention_hook("blocks.1.hook_resid_post")
    assert dictionary_layer(attention_sae(64, layer=0)) == 0
    with pytest.raises(InputError, match="not an attention output"):
        feature_dfa(model, attention_sae(64), PROMPT, hook="blocks.1.hook_resid_post")
    with pytest.raises(InputError, match="layer 5 is out of range"):
        feature_dfa(model, attention_sae(64, layer=5), PROMPT)
    with pytest.raises(InputError, match="not n_heads x d_head"):
        feature_dfa(model, attention_sae(48), PROMPT)
    with pytest.raises(InputError, match="features must be in 0..23"):
        feature_dfa(model, attention_sae(64), PROMPT, features=[24])
    with pytest.raises(InputError, match="outside the prompt"):
        feature_dfa(model, attention_sae(64), PROMPT, dest=500)
    with pytest.raises(InputError, match="empty"):
        feature_dfa(model, attention_sae(64), " ")
    with pytest.raises(InputError, match="out of range"):
        feature_head_weights(attention_sae(64), 4, 99)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "mp", "codebook"])
def test_every_sparsescope_architecture_on_hook_z(arch, tmp_path):
    """Saved and reloaded like any dictionary: DFA sums to W_enc . z (MP and codebook have no b_enc)."""
    from sae.dictionaries import build_training_sae, load_dictionary, save_dictionary

    model = tiny()
    trained = build_training_sae(dict_spec(arch, d_sae=32, hook_name="blocks.1.attn.hook_z"))
    with torch.no_grad():
        for param in trained.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    save_dictionary(trained, tmp_path / arch)
    sae = load_dictionary(tmp_path / arch)
    result = feature_dfa(model, sae, PROMPT, features=[0, 1, 2])
    np.testing.assert_allclose(result.dfa.sum((1, 2)), result.z_term, atol=1e-4)
    np.testing.assert_allclose(head_attribution(sae, 4).sum(-1).numpy(), 1.0, atol=1e-5)
