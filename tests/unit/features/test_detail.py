"""analysis.features.detail: a feature's logit-effect histogram, neuron alignment and whole-context activations,
each against a brute-force reference written here."""
import numpy as np
import pytest
import torch

from analysis.features.analyze import residual_directions
from analysis.features.detail import (
    context_activations,
    dimension_correlations,
    logit_histogram,
    neuron_alignment,
)
from analysis.features.weights import final_norm_map
from sae.dictionaries import build_training_sae, feature_activations
from tests.factories import dict_spec

HOOK = "blocks.0.hook_resid_post"


def _dictionary(arch: str = "topk", d_in: int = 64, seed: int = 0):
    torch.manual_seed(seed)
    sae = build_training_sae(dict_spec(arch, d_in=d_in, d_sae=48, k=4))
    with torch.no_grad():
        sae.W_dec.add_(torch.randn_like(sae.W_dec))  # every entry distinct, so the rankings have no ties
    return sae


@pytest.mark.parametrize("feature", [0, 7, 47])
def test_the_histogram_counts_the_whole_vocabulary_and_marks_its_extremes(tiny_model, feature):
    sae = _dictionary()
    direction = residual_directions(sae, tiny_model, HOOK, [feature])[0]
    hist = logit_histogram(direction, tiny_model.W_U.detach(), final_norm_map(tiny_model))
    assert hist.counts.sum() == tiny_model.cfg.d_vocab
    # brute force: the final LayerNorm's linear part (centre, scale by its weight), then every token's logit
    row = sae.W_dec[feature].detach().double()
    row = (row - row.mean()) * tiny_model.ln_final.w.detach().double()
    effects = (row @ tiny_model.W_U.detach().double()).numpy()
    order = np.argsort(-effects)
    assert hist.top_ids.tolist() == order[:10].tolist()
    assert hist.bottom_ids.tolist() == order[::-1][:10].tolist()
    np.testing.assert_allclose(hist.top_values, effects[order[:10]], rtol=1e-5, atol=1e-6)
    assert hist.edges[0] == pytest.approx(effects.min(), abs=1e-5)
    assert hist.edges[-1] == pytest.approx(effects.max(), abs=1e-5)
    # each bin holds the tokens whose effect lies in it
    inside = ((effects[:, None] >= hist.edges[None, :-1]) & (effects[:, None] < hist.edges[None, 1:])).sum(0)
    assert np.abs(inside[:-1] - hist.counts[:-1]).max() <= 1  # a value on an edge may round to either side


def test_a_constant_direction_has_one_full_bin(tiny_model):
    hist = logit_histogram(torch.zeros(tiny_model.cfg.d_model), tiny_model.W_U.detach())
    assert hist.counts.sum() == tiny_model.cfg.d_vocab and hist.counts.max() == tiny_model.cfg.d_vocab


@pytest.mark.parametrize("feature", [0, 13, 30])
def test_neuron_alignment_is_the_argsort_of_absolute_decoder_entries(feature):
    sae = _dictionary()
    row = sae.W_dec[feature].detach().numpy().astype(np.float64)
    dims, values, shares = neuron_alignment(sae.W_dec[feature], n=10)
    expected = np.argsort(-np.abs(row))[:10]
    assert dims.tolist() == expected.tolist()
    np.testing.assert_allclose(values, row[expected], rtol=1e-6)
    np.testing.assert_allclose(shares, np.abs(row[expected]) / np.abs(row).sum(), rtol=1e-5)
    assert np.all(np.diff(np.abs(values)) <= 0) and shares.sum() <= 1


@pytest.mark.parametrize("arch", ["topk", "relu", "codebook"])
def test_whole_context_activations_match_a_batched_run(tiny_model, arch):
    sae = _dictionary(arch)
    tokens = tiny_model.to_tokens(["The cat sat on the mat and looked around.", "Numbers: 1, 2, 3, 4, 5, 6, 7!"])
    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(tokens, names_filter=HOOK)
        reference = feature_activations(sae, cache[HOOK].reshape(-1, 64)).reshape(2, tokens.shape[1], -1)
    for i in range(2):
        acts, feature_acts = context_activations(tiny_model, HOOK, sae, tokens[i].tolist())
        assert acts.shape == (tokens.shape[1], 64)
        torch.testing.assert_close(acts, cache[HOOK][i], atol=1e-5, rtol=1e-5)
        assert feature_acts[0].abs().sum() == 0  # the attention sink, left out as analyze leaves it out
        torch.testing.assert_close(feature_acts[1:], reference[i, 1:].float(), atol=1e-4, rtol=1e-4)


def test_dimension_correlations_equal_numpy_corrcoef():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(200, 16))
    feature = np.maximum(acts[:, 3] * 2 + rng.normal(size=200), 0)
    acts[:, 5] = 1.0  # constant: no correlation defined
    dims = np.array([3, 0, 5, 11])
    got = dimension_correlations(feature, acts, dims)
    for value, dim in zip(got, dims):
        if dim == 5:
            assert np.isnan(value)
        else:
            assert value == pytest.approx(np.corrcoef(feature, acts[:, dim])[0, 1], abs=1e-10)
    assert got[0] > 0.7
