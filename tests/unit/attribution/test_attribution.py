"""Attribution on tiny-random: completeness where the metric is linear, edges against finite differences,
faithfulness at its two ends, and a perfect dictionary whose error nodes carry nothing."""
import pytest
import torch

from analysis.attribution import (
    AttributionConfig,
    Node,
    attribute,
    edges,
    faithfulness,
    make_baseline,
    node_attributions,
    prompt_tokens,
    prune_nodes,
    target_ids,
)
from tests.factories import seeded_tiny
from tests.unit.attribution.conftest import LAST, PROMPT, _dictionary, _sites


@pytest.fixture(scope="module")
def model():
    return seeded_tiny()


def test_completeness_at_the_last_residual_stream_with_the_final_norm_frozen(model):
    # After the last block the metric is unembed(ln_final(x)) at the last position: with ln_final's scale held at
    # its clean value it is affine in x, so activation x gradient is exact and the nodes and errors of a dictionary
    # spliced there must sum to m(clean) - m(every feature and error zero, i.e. x = decode(0)). Elsewhere (an
    # earlier layer, the norm free) the attributions are a first-order estimate and no sum has to hold.
    sae = _dictionary(LAST)
    sites = _sites(model, ("last", LAST, sae))
    tokens = prompt_tokens(model, PROMPT)
    tid, cid = target_ids(model, " ", "e")
    scores = node_attributions(model, tokens, sites, tid, cid, make_baseline(model, sites, "zero"),
                               freeze_final_norm=True)
    total = float(scores.features[0].sum() + scores.errors[0].sum())

    _, cache = model.run_with_cache(tokens, names_filter="ln_final.hook_scale")
    zero_x = sae.decode(torch.zeros(1, sae.cfg.d_sae)).detach()
    hooks = [(LAST, lambda x, hook: zero_x.expand_as(x).clone()),
             ("ln_final.hook_scale", lambda s, hook: cache["ln_final.hook_scale"])]
    with torch.no_grad():
        base = model.run_with_hooks(tokens, fwd_hooks=hooks)[0, -1]
    expected = scores.metric - float(base[tid] - base[cid])
    assert abs(expected) > 0.05  # the check means something
    assert total == pytest.approx(expected, rel=1e-3, abs=1e-4)


def test_a_perfect_dictionary_leaves_nothing_to_its_error_nodes(model):
    # a ReLU dictionary with W_enc = [I, -I], W_dec = [I; -I]: relu(x) - relu(-x) = x, error zero
    hook = "blocks.0.hook_resid_post"
    sae = _dictionary(hook, arch="relu", d_sae=128, k=None)
    eye = torch.eye(64)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    sites = _sites(model, ("perfect", hook, sae), ("last", LAST, _dictionary(LAST)))
    tokens = prompt_tokens(model, PROMPT)
    tid, cid = target_ids(model, " ", "e")
    scores = node_attributions(model, tokens, sites, tid, cid, make_baseline(model, sites, "zero"))
    assert scores.errors[0].abs().max() < 1e-5
    assert scores.features[0].abs().max() > 1e-3  # its features carry the effect instead
    assert scores.errors[1].abs().max() > 1e-3  # while an imperfect dictionary's errors do carry some


def _perturbed(model, tokens, up, down, node: Node, h: float) -> float:
    """f_down at (pos, feature) of `node`'s downstream partner with upstream feature `node` moved by h, the
    upstream error held at its clean value."""
    seen = {}

    def at_up(x, hook):
        flat = x[0]
        f = up.encode(flat)
        eps = flat - up.decode(f)
        f = f.clone()
        f[node.pos, node.feature] += h
        return (up.decode(f) + eps)[None]

    def at_down(x, hook):
        seen["f"] = down.encode(x[0])

    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(up.hook, at_up), (down.hook, at_down)])
    return seen["f"]


def test_edge_weights_agree_with_finite_differences(model):
    up_hook, down_hook = "blocks.0.hook_resid_post", LAST
    sites = _sites(model, ("up", up_hook, _dictionary(up_hook, seed=1)), ("down", down_hook, _dictionary(down_hook)))
    tokens = prompt_tokens(model, PROMPT)
    tid, cid = target_ids(model, " ", "e")
    baseline = make_baseline(model, sites, "zero")
    scores = node_attributions(model, tokens, sites, tid, cid, baseline)
    nodes = prune_nodes(scores, max_nodes=30, share=1.0)
    links = [link for link in edges(model, tokens, sites, scores, nodes, baseline)
             if link.target is not None and link.source.feature is not None and link.target.feature is not None]
    links = sorted(links, key=lambda link: -abs(link.weight))[:4]
    assert len(links) == 4
    for link in links:
        u, d = link.source, link.target
        h = 1e-2 * max(abs(u.activation), 1e-2)
        plus = _perturbed(model, tokens, sites[0], sites[1], u, h)[d.pos, d.feature]
        minus = _perturbed(model, tokens, sites[0], sites[1], u, -h)[d.pos, d.feature]
        derivative = float(plus - minus) / (2 * h)
        expected = float(scores.grad_f[1][d.pos, d.feature]) * derivative * u.activation  # zero baseline
        assert link.weight == pytest.approx(expected, rel=0.05), (u, d)


def _every_node(scores, first_pos: int = 1) -> list[Node]:
    nodes = []
    for i, (fa, ea) in enumerate(zip(scores.features, scores.errors)):
        for pos in range(first_pos, fa.shape[0]):
            nodes += [scores.node(i, f, pos) for f in range(fa.shape[1])]
            nodes.append(scores.node(i, None, pos))
    return nodes


@pytest.mark.parametrize("kind", ["zero", "mean"])
def test_faithfulness_is_one_for_the_full_graph_and_zero_for_the_empty_one(model, kind):
    hooks = ("blocks.0.hook_resid_post", LAST)
    sites = _sites(model, *[(f"d{i}", h, _dictionary(h, seed=i)) for i, h in enumerate(hooks)])
    tokens = prompt_tokens(model, PROMPT)
    tid, cid = target_ids(model, " ", "e")
    corpus = model.to_tokens(["a quick brown fox jumps over it", "numbers 1 2 3 and more words"])
    baseline = make_baseline(model, sites, kind, corpus)
    scores = node_attributions(model, tokens, sites, tid, cid, baseline)
    full = faithfulness(model, tokens, sites, _every_node(scores), baseline, tid, cid)
    empty = faithfulness(model, tokens, sites, [], baseline, tid, cid)
    assert full.full == pytest.approx(scores.metric, abs=1e-4)  # the splice leaves the model unchanged
    assert abs(full.full - full.empty) > 0.05
    assert full.recovered == pytest.approx(1.0, abs=1e-4)
    assert empty.recovered == pytest.approx(0.0, abs=1e-6)


def test_a_whole_run_gives_a_pruned_graph_with_figures(model):
    hooks = ("blocks.0.hook_resid_post", LAST)
    sites = _sites(model, *[(f"d{i}", h, _dictionary(h, seed=i)) for i, h in enumerate(hooks)])
    tokens = prompt_tokens(model, PROMPT)
    tid, cid = target_ids(model, " ", "e")
    result = attribute(model, tokens, sites, tid, cid, make_baseline(model, sites, "zero"),
                       AttributionConfig(max_nodes=5))
    assert 0 < sum(n.feature is not None for n in result.nodes) <= 5
    assert all(n.pos >= 1 for n in result.nodes)  # position 0 is never a node
    assert result.faith.recovered is not None and result.faith.top_removed is not None
    assert {link.source for link in result.links} <= set(result.nodes)


def test_a_caller_with_gradients_off_gets_the_same_graph(model):
    # the UI and libraries may run with gradients off; the engine's passes turn them on for themselves
    hooks = ("blocks.0.hook_resid_post", LAST)
    sites = _sites(model, *[(f"d{i}", h, _dictionary(h, seed=i)) for i, h in enumerate(hooks)])
    tokens = prompt_tokens(model, PROMPT)
    tid, cid = target_ids(model, " ", "e")
    baseline = make_baseline(model, sites, "zero")
    on = attribute(model, tokens, sites, tid, cid, baseline, AttributionConfig(max_nodes=5))
    with torch.no_grad():
        off = attribute(model, tokens, sites, tid, cid, baseline, AttributionConfig(max_nodes=5))
    assert [(n.site, n.pos, n.feature) for n in off.nodes] == [(n.site, n.pos, n.feature) for n in on.nodes]
    assert [round(link.weight, 6) for link in off.links] == [round(link.weight, 6) for link in on.links]
