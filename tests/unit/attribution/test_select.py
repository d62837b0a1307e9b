"""The refinement of a graph's feature nodes (select.py): its batched gated runs are the ablation the
faithfulness figure runs, its gate gradients are the graph-only model's, and a search never ends farther from the
full metric than it started, with no more feature nodes."""
import pytest
import torch

from analysis.attribution import keep_masks, make_baseline, node_attributions, prompt_tokens, run_ablated, target_ids
from analysis.attribution.faithfulness import faithfulness
from analysis.attribution.select import _gates, _gradient, refine
from analysis.attribution.splice import run_gated
from tests.unit.attribution.conftest import LAST, PROMPT, _dictionary, _sites

HOOKS = ("blocks.0.hook_resid_post", LAST)


@pytest.fixture(scope="module")
def setup():
    from tests.factories import seeded_tiny

    model = seeded_tiny()
    sites = _sites(model, *[(f"d{i}", h, _dictionary(h, seed=i)) for i, h in enumerate(HOOKS)])
    tokens = prompt_tokens(model, PROMPT)
    tid, cid = target_ids(model, " ", "e")
    corpus = model.to_tokens(["a quick brown fox jumps over it", "numbers 1 2 3 and more words"])
    baseline = make_baseline(model, sites, "mean", corpus)
    scores = node_attributions(model, tokens, sites, tid, cid, baseline)
    return model, sites, tokens, tid, cid, baseline, scores


def _active(scores, site):
    """(site, pos, feature) of every active feature at positions >= 1."""
    pos, feat = torch.nonzero(scores.acts[site][1:] != 0, as_tuple=True)
    return [(site, int(p) + 1, int(f)) for p, f in zip(pos, feat)]


def test_batched_gated_runs_are_the_ablation_pass(setup):
    model, sites, tokens, tid, cid, baseline, scores = setup
    keys = _active(scores, 0) + _active(scores, 1)
    sets = [set(keys[::2]), set(keys[1::3]), set()]
    errors = [scores.node(i, None, p) for i in range(2) for p in range(1, tokens.shape[1], 2)]
    masks = keep_masks(sites, tokens.shape[1], errors)
    gated = run_gated(model, tokens, sites, _gates(sites, masks, sets, 1), baseline, tid, cid)
    for chosen, value in zip(sets, gated.tolist()):
        nodes = errors + [scores.node(s, f, p) for s, p, f in chosen]
        one = run_ablated(model, tokens, sites, keep_masks(sites, tokens.shape[1], nodes), baseline, tid, cid)
        assert value == pytest.approx(one, abs=1e-4)
    assert len(set(round(v, 4) for v in gated.tolist())) == 3  # the three sets are three different graphs


def test_gate_gradients_agree_with_finite_differences(setup):
    model, sites, tokens, tid, cid, baseline, scores = setup
    every = _active(scores, 0) + _active(scores, 1)
    chosen = set(every[::2])  # half the features kept, so the kept ones stay active in the graph-only model
    masks = keep_masks(sites, tokens.shape[1], [])
    _, grads = _gradient(model, tokens, sites, masks, chosen, baseline, tid, cid, 1)
    keys = sorted(every, key=lambda k: -abs(float(grads[k[0]][k[1], k[2]])))[:5]  # the largest, above float noise
    checked = 0
    for key in keys:
        site, pos, feature = key
        g = _gates(sites, masks, [chosen], 1)
        h = 0.05
        plus = [(gf.clone(), ge) for gf, ge in g]
        minus = [(gf.clone(), ge) for gf, ge in g]
        plus[site][0][0, pos, feature] += h
        minus[site][0][0, pos, feature] -= h
        with torch.no_grad():
            fd = float(run_gated(model, tokens, sites, plus, baseline, tid, cid)[0]
                       - run_gated(model, tokens, sites, minus, baseline, tid, cid)[0]) / (2 * h)
        assert float(grads[site][pos, feature]) == pytest.approx(fd, rel=0.05)
        checked += abs(fd) > 1e-4
    assert checked == 5


def test_refinement_ends_closer_to_the_full_metric_with_no_more_nodes(setup):
    model, sites, tokens, tid, cid, baseline, scores = setup
    # a poor start on purpose: the active features of least |attribution|
    keys = sorted(_active(scores, 0) + _active(scores, 1),
                  key=lambda k: abs(float(scores.features[k[0]][k[1], k[2]])))[:6]
    errors = [scores.node(i, None, p) for i in range(2) for p in range(1, tokens.shape[1])]
    start = [scores.node(s, f, p) for s, p, f in keys] + errors
    result = refine(model, tokens, sites, scores, start, baseline, tid, cid, rounds=10)
    feats = [n for n in result.nodes if n.feature is not None]
    assert len(feats) <= 6
    assert [n for n in result.nodes if n.feature is None] == errors
    assert len(result.history) >= 2  # at least one round was taken from this start
    assert abs(result.history[-1] - result.full) < abs(result.history[0] - result.full)
    measured = faithfulness(model, tokens, sites, result.nodes, baseline, tid, cid)
    assert measured.graph == pytest.approx(result.history[-1], abs=1e-4)  # the search's figure is the ablation's
