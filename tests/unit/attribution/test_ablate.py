"""Ablating one node on tiny-random: where the metric is linear in the node the measured change is the attribution's
prediction (-attribution); a node already at its baseline changes nothing; bad node coordinates are one InputError."""
import pytest
import torch

from analysis.attribution import (
    ablate_node,
    make_baseline,
    make_sites,
    node_attributions,
    predicted_change,
    prompt_tokens,
    site_index,
    target_ids,
)
from sae.dictionaries import build_training_sae
from store.errors import InputError
from tests.factories import TINY_MODEL, dict_spec, seeded_tiny

PROMPT = "the cat sat on the mat and the dog"
FIRST, LAST = "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"  # tiny-random has 2 blocks


def _dictionary(hook: str, seed: int = 0):
    torch.manual_seed(seed)
    sae = build_training_sae(dict_spec(arch="topk", hook_name=hook, d_sae=128, k=8))
    with torch.no_grad():  # a nonzero decoder bias, so the zero baseline is not the zero vector
        sae.b_dec.normal_(0, 0.1)
    return sae


@pytest.fixture(scope="module")
def model():
    return seeded_tiny()


def _setup(model, kind: str, hooks=(LAST,)):
    sites = make_sites(model, [(f"d{i}", TINY_MODEL, h, _dictionary(h, seed=i)) for i, h in enumerate(hooks)])
    tokens = prompt_tokens(model, PROMPT)
    tid, cid = target_ids(model, " ", "e")
    corpus = model.to_tokens(["a quick brown fox jumps over it", "numbers 1 2 3 and more words"])
    return sites, tokens, tid, cid, make_baseline(model, sites, kind, corpus)


@pytest.mark.parametrize("kind", ["zero", "mean"])
def test_the_change_is_the_attribution_where_the_metric_is_linear(model, kind):
    # a dictionary at the last residual stream, ln_final's scale held at its clean value: the metric (read at the
    # last position) is affine in every node there, so the first-order prediction is exact
    sites, tokens, tid, cid, baseline = _setup(model, kind)
    scores = node_attributions(model, tokens, sites, tid, cid, baseline, freeze_final_norm=True)
    fa, last = scores.features[0], tokens.shape[1] - 1
    picks = [(int(f), last) for f in fa[last].abs().topk(4).indices] + [(None, last)]  # 4 features, the error
    for feature, pos in picks:
        attribution = float(fa[pos, feature]) if feature is not None else float(scores.errors[0][pos])
        assert abs(attribution) > 1e-3, (feature, pos)  # the check means something
        done = ablate_node(model, tokens, sites, tid, cid, baseline, 0, feature, pos, freeze_final_norm=True)
        assert done.before == pytest.approx(scores.metric, abs=1e-4)
        assert done.change == pytest.approx(predicted_change(attribution), rel=1e-3, abs=1e-4), (feature, pos)
    # an earlier position does not reach the metric through the last residual stream: nothing predicted, no change
    early = int(fa[3].abs().argmax())
    assert float(fa[3, early]) == 0.0
    assert ablate_node(model, tokens, sites, tid, cid, baseline, 0, early, 3, freeze_final_norm=True).change == 0.0


def test_a_node_at_its_baseline_changes_nothing(model):
    # zero ablation: a feature that does not fire is already at its baseline, wherever it sits (here upstream, where
    # the metric is not linear in it)
    sites, tokens, tid, cid, baseline = _setup(model, "zero", hooks=(FIRST, LAST))
    scores = node_attributions(model, tokens, sites, tid, cid, baseline)
    quiet = int((scores.acts[0][4] == 0).nonzero()[0])
    fired = int(scores.acts[0][4].argmax())
    done = ablate_node(model, tokens, sites, tid, cid, baseline, 0, quiet, 4)
    assert done.after == done.before and done.change == 0.0
    moved = ablate_node(model, tokens, sites, tid, cid, baseline, 0, fired, 4)
    assert moved.before == done.before and abs(moved.change) > 1e-5  # a firing one does move the metric


def test_bad_node_coordinates_are_one_input_error(model):
    sites, tokens, tid, cid, baseline = _setup(model, "zero")
    for site, feature, pos, says in [(0, 0, 99, "position 99 is out of range"), (0, 500, 2, "feature 500"),
                                     (3, 0, 2, "site 3 is out of range")]:
        with pytest.raises(InputError, match=says):
            ablate_node(model, tokens, sites, tid, cid, baseline, site, feature, pos)
    assert site_index(sites, "d0") == 0
    with pytest.raises(InputError, match="'nope' is not among"):
        site_index(sites, "nope")
