"""analysis.features.search_text: the features that fire most on a text, in every dictionary of a model, against
a brute-force encode of each dictionary on the whole model's activations."""
import numpy as np
import pytest
import torch

from analysis.dictionaries import open_dictionary
from analysis.features.search_text import pick_dictionaries, rank_features, search_text, search_workspace
from sae.dictionaries import feature_activations
from store.dictionaries import DictionaryRow
from store.errors import InputError
from tests.factories import SEARCH_ANALYSED, SEARCH_DICTIONARIES

TEXT = "The quick brown fox jumps over the lazy dog; matching pursuit picks one atom at a time."


def brute_force(model, sae, hook: str, text: str, top: int):
    """[(feature, max act, [(position, act)])] strongest first: the whole model run, every feature's maximum over
    the text's tokens (BOS left out), sorted in Python."""
    tokens = model.to_tokens(text)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        acts = cache[hook][0].reshape(tokens.shape[1], -1)  # (T, d_in), hook_z heads flattened head-major
        f = feature_activations(sae, acts).numpy()[1:]  # (T - 1, d_sae)
    best = sorted((-float(f[:, j].max()), j) for j in range(f.shape[1]) if f[:, j].max() > 0)[:top]
    return [(j, -neg, [(int(p) + 1, float(f[p, j])) for p in np.nonzero(f[:, j] > 0)[0]]) for neg, j in best]


def test_every_dictionary_ranks_as_a_brute_force_encode(search_ws, tiny_model):
    result = search_workspace(search_ws, TEXT, top=7)
    assert [g.dictionary for g in result.groups] != [] and result.has_bos and not result.truncated
    assert {g.dictionary for g in result.groups} == {d[0] for d in SEARCH_DICTIONARIES}
    for group in result.groups:
        _, sae = open_dictionary(search_ws, group.dictionary, device="cpu")
        expected = brute_force(tiny_model, sae, group.hook, TEXT, 7)
        assert [h.feature for h in group.hits] == [e[0] for e in expected], group.dictionary
        np.testing.assert_allclose([h.max_act for h in group.hits], [e[1] for e in expected], rtol=1e-5, atol=1e-6)
        for hit, (_, _, firings) in zip(group.hits, expected):
            assert [f.position for f in hit.firings] == [p for p, _ in firings]
            np.testing.assert_allclose([f.activation for f in hit.firings], [a for _, a in firings], rtol=1e-5,
                                       atol=1e-6)
            assert all(f.token == result.tokens[f.position] for f in hit.firings)
            assert max(f.activation for f in hit.firings) == pytest.approx(hit.max_act)


def test_topk_matches_its_own_encoder(search_ws, tiny_model):
    """The registry's feature_activations of a TopK dictionary is its plain encode: check against encode."""
    result = search_workspace(search_ws, TEXT, names=["res0-topk"], top=3)
    _, sae = open_dictionary(search_ws, "res0-topk", device="cpu")
    _, cache = tiny_model.run_with_cache(TEXT)
    encoded = sae.encode(cache["blocks.0.hook_resid_post"][0]).detach()[1:]  # (T - 1, d_sae)
    peak, ids = encoded.max(dim=0).values.topk(3)
    assert [h.feature for h in result.groups[0].hits] == ids.tolist()
    np.testing.assert_allclose([h.max_act for h in result.groups[0].hits], peak.numpy(), rtol=1e-5)


def test_groups_follow_the_models_hooks_and_carry_labels(search_ws):
    result = search_workspace(search_ws, TEXT, top=4)
    hooks = list(result.by_hook())
    assert hooks == ["blocks.0.attn.hook_z", "blocks.0.hook_resid_post", "blocks.1.hook_resid_pre"]
    assert [g.dictionary for g in result.by_hook()["blocks.0.hook_resid_post"]] == ["res0-codebook", "res0-mp",
                                                                                     "res0-topk"]
    for group in result.groups:
        assert group.analysed == (group.dictionary == SEARCH_ANALYSED)
        assert group.hits, group.dictionary
        for hit in group.hits:
            if group.analysed:
                assert hit.label == f"feature {hit.feature}" and hit.density == pytest.approx((hit.feature + 1) / 1000)
            else:
                assert hit.label is None and hit.density is None


class Spy:
    """A model whose run_with_cache calls are recorded."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def run_with_cache(self, *args, **kwargs):
        self.calls.append(kwargs)
        return self.model.run_with_cache(*args, **kwargs)


def test_one_forward_pass_to_the_deepest_hook(search_ws, tiny_model):
    saes = {name: (hook, open_dictionary(search_ws, name, device="cpu")[1])
            for name, _, hook, _, _ in SEARCH_DICTIONARIES}
    spy = Spy(tiny_model)
    search_text(spy, TEXT, saes)
    assert len(spy.calls) == 1 and spy.calls[0]["stop_at_layer"] == 2
    assert sorted(spy.calls[0]["names_filter"]) == sorted({hook for hook, _ in saes.values()})
    spy.calls.clear()
    search_text(spy, TEXT, {k: v for k, v in saes.items() if v[0].startswith("blocks.0.")})
    assert len(spy.calls) == 1 and spy.calls[0]["stop_at_layer"] == 1  # layer 1 never runs


def test_rank_features_skips_bos_breaks_ties_by_id_and_drops_silent_features():
    acts = np.array([[9.0, 9.0, 0.0, 9.0],   # BOS: left out
                     [0.0, 2.0, 0.0, 1.0],
                     [0.5, 0.0, 0.0, 2.0]])
    hits = rank_features(acts, ["<bos>", "a", "b"], first=1, top=10)
    assert [(h.feature, h.max_act) for h in hits] == [(1, 2.0), (3, 2.0), (0, 0.5)]
    assert [(f.position, f.token, f.activation) for f in hits[1].firings] == [(1, "a", 1.0), (2, "b", 2.0)]
    assert [h.feature for h in rank_features(acts, ["<bos>", "a", "b"], first=1, top=2)] == [1, 3]


def _row(name: str, model: str, hook: str = "blocks.0.hook_resid_post") -> DictionaryRow:
    return DictionaryRow(name, model, hook, "topk", 64, 128, 4, f"/nowhere/{name}")


def test_pick_dictionaries_checks_the_model_and_names():
    rows = [_row("a", "tiny-random"), _row("b", "tiny-random"), _row("g", "gpt2"), _row("x", "", "")]
    assert pick_dictionaries(rows, "tiny-random")[1] == rows[:2]
    assert pick_dictionaries(rows, None, ["b"])[1] == [rows[1]] and pick_dictionaries(rows[:2])[0] == "tiny-random"
    assert pick_dictionaries(rows, None, default_model="gpt2")[1] == [rows[2]]
    with pytest.raises(InputError, match="several models"):
        pick_dictionaries(rows)
    with pytest.raises(InputError, match="no dictionaries for model 'llama'"):
        pick_dictionaries(rows, "llama")
    with pytest.raises(InputError, match="unknown dictionary 'zz'"):
        pick_dictionaries(rows, "tiny-random", ["a", "zz"])
    with pytest.raises(InputError, match="'g' does not read tiny-random"):
        pick_dictionaries(rows, "tiny-random", ["g"])
    with pytest.raises(InputError, match="no dictionary in this workspace"):
        pick_dictionaries([rows[3]])


def test_bad_text_and_top_are_input_errors(search_ws):
    for text, message in (("  \n", "empty"), ("x" * 4001, "at most")):
        with pytest.raises(InputError, match=message):
            search_workspace(search_ws, text)
    with pytest.raises(InputError, match="top must be"):
        search_workspace(search_ws, TEXT, top=0)


def test_a_text_longer_than_the_context_is_cut_and_says_so(search_ws, tiny_model):
    result = search_workspace(search_ws, "ab" * 200, names=["res0-topk"])
    assert result.truncated and len(result.tokens) == tiny_model.cfg.n_ctx
    assert all(f.position < tiny_model.cfg.n_ctx for h in result.groups[0].hits for f in h.firings)
