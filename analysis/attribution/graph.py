"""Node attributions, pruning, and edges between the kept nodes of consecutive dictionaries (Marks et al.,
"Sparse Feature Circuits", attribution patching).

A node is a feature at a position (its activation f) or a dictionary's error at a position (eps). Its attribution
is the first-order estimate of how much the metric m falls when the node is replaced by its baseline b:
    feature  (dm/df) * (f - b)            error  (dm/deps) . (eps - b)
(positive: the node supports the target). An edge u -> d between consecutive dictionaries is how much of u's
attribution flows through d, with the upstream error held constant:
    w(u -> d) = (dm/da_d) (da_d/da_u) (a_u - b_u)
for a feature d, and with (dm/deps_d) . eps_d in place of (dm/da_d) a_d for an error node d. One forward is
reused for every downstream node; each one costs a backward through the layers between the two dictionaries.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from analysis.attribution.splice import Baseline, Site, run_edge_pass, run_node_pass


@dataclass(frozen=True)
class Node:
    site: int
    """Index of the dictionary in the attribution's sites (upstream first)."""
    feature: int | None
    """None: the site's error node at this position."""
    pos: int
    activation: float
    """The feature's activation (an error node: the norm of its error vector)."""
    attribution: float


@dataclass
class NodeScores:
    """Every node's attribution at every site, with what the edges need."""

    metric: float
    features: list[Tensor]
    """Per site, [pos, d_sae] feature attributions."""
    errors: list[Tensor]
    """Per site, [pos] error attributions."""
    acts: list[Tensor]
    """Per site, [pos, d_sae] feature activations."""
    error_norms: list[Tensor]
    grad_f: list[Tensor]
    grad_eps: list[Tensor]

    def node(self, site: int, feature: int | None, pos: int) -> Node:
        if feature is None:
            return Node(site, None, pos, float(self.error_norms[site][pos]), float(self.errors[site][pos]))
        return Node(site, feature, pos, float(self.acts[site][pos, feature]),
                    float(self.features[site][pos, feature]))


@dataclass(frozen=True)
class Link:
    source: Node
    target: Node | None
    """None: the metric (the graph's logit node)."""
    weight: float


def node_attributions(model, tokens: Tensor, sites: list[Site], target: int, contrast: int | None,
                      baseline: Baseline, freeze_final_norm: bool = False) -> NodeScores:
    """Attributions of every feature and error node from one forward and one backward."""
    metric, states = run_node_pass(model, tokens, sites, target, contrast, freeze_final_norm)
    out = NodeScores(float(metric), [], [], [], [], [], [])
    for st, bf, be in zip(states, baseline.features, baseline.errors):
        f, eps = st.f.detach(), st.eps.detach()
        gf = st.f.grad if st.f.grad is not None else torch.zeros_like(f)
        ge = st.eps.grad if st.eps.grad is not None else torch.zeros_like(eps)
        out.features.append(gf * (f - bf))
        out.errors.append((ge * (eps - be)).sum(-1))
        out.acts.append(f)
        out.error_norms.append(eps.norm(dim=-1))
        out.grad_f.append(gf)
        out.grad_eps.append(ge)
    return out


def _site_candidates(fa: Tensor, ea: Tensor, site: int, max_nodes: int, share: float, first_pos: int):
    """(relative |attribution|, site, pos, feature) of one site's nodes, largest first, until they carry `share`
    of the site's total |attribution| (at most max_nodes features and as many errors)."""
    fa, ea = fa[first_pos:].abs(), ea[first_pos:].abs()
    total = float(fa.sum()) + float(ea.sum())
    if total <= 0:
        return []
    top = torch.topk(fa.flatten(), min(max_nodes, fa.numel()))
    feats = [(float(v), int(ix) // fa.shape[1] + first_pos, int(ix) % fa.shape[1])
             for v, ix in zip(top.values, top.indices) if v > 0]
    errs = sorted(((float(v), p + first_pos, None) for p, v in enumerate(ea.tolist()) if v > 0),
                  key=lambda e: -e[0])[:max_nodes]
    out, carried = [], 0.0
    for value, pos, feature in sorted(feats + errs, key=lambda e: -e[0]):
        if carried >= share * total:
            break
        out.append((value / total, site, pos, feature))
        carried += value
    return out


def prune_nodes(scores: NodeScores, max_nodes: int, share: float, first_pos: int = 1) -> list[Node]:
    """The nodes that carry `share` of each site's total |attribution| (positions >= first_pos), largest first;
    every dictionary is a cut of the model, so each one's nodes carry the whole effect once. At most `max_nodes`
    feature nodes in all (and as many error nodes), the largest shares of their site's total first."""
    candidates = []
    for i, (fa, ea) in enumerate(zip(scores.features, scores.errors)):
        candidates += _site_candidates(fa, ea, i, max_nodes, share, first_pos)
    candidates.sort(key=lambda c: -c[0])
    feats = [c for c in candidates if c[3] is not None][:max_nodes]
    errs = [c for c in candidates if c[3] is None][:max_nodes]
    return [scores.node(site, feature, pos) for _, site, pos, feature in sorted(feats + errs, key=lambda c: -c[0])]


def _left(scores: NodeScores, states, node: Node) -> Tensor | None:
    """The scalar whose gradient gives (dm/da_d)(da_d/da_u) for downstream node d; None when its activation does
    not depend on the input differentiably (a codebook's chosen codes)."""
    st = states[node.site]
    if node.feature is None:
        return (scores.grad_eps[node.site][node.pos] * st.eps[node.pos]).sum()
    value = st.f[node.pos, node.feature]
    if not value.requires_grad:
        return None
    return scores.grad_f[node.site][node.pos, node.feature] * value


@torch.enable_grad()
def edges(model, tokens: Tensor, sites: list[Site], scores: NodeScores, nodes: list[Node], baseline: Baseline,
          tick: Callable[[], None] | None = None) -> list[Link]:
    """Links between kept nodes of consecutive sites that have kept nodes, plus each last-site node -> the metric
    (weight: its attribution). One backward per kept downstream node."""
    by_site: dict[int, list[Node]] = {}
    for n in nodes:
        by_site.setdefault(n.site, []).append(n)
    order = sorted(by_site)
    links = [Link(n, None, n.attribution) for n in by_site.get(order[-1], [])] if order else []
    if len(order) < 2:
        return links
    states = run_edge_pass(model, tokens, sites[:max(order) + 1])
    for up, down in zip(order, order[1:]):
        su = states[up]
        df = (su.f_leaf.detach() - baseline.features[up])
        de = (su.eps_leaf.detach() - baseline.errors[up])
        for d in by_site[down]:
            scalar = _left(scores, states, d)
            if tick is not None:
                tick()
            if scalar is None or not scalar.requires_grad:
                continue
            gf, ge = torch.autograd.grad(scalar, [su.f_leaf, su.eps_leaf], retain_graph=True, allow_unused=True)
            for u in by_site[up]:
                if u.feature is None:
                    w = 0.0 if ge is None else float((ge[u.pos] * de[u.pos]).sum())
                else:
                    w = 0.0 if gf is None else float(gf[u.pos, u.feature] * df[u.pos, u.feature])
                if w != 0.0:
                    links.append(Link(u, d, w))
    return links


def prune_links(links: list[Link], share: float) -> list[Link]:
    """The metric's links, and the largest |weight| node-to-node links carrying `share` of their total |weight|."""
    to_metric = [link for link in links if link.target is None]
    inner = sorted((link for link in links if link.target is not None), key=lambda link: -abs(link.weight))
    total = sum(abs(link.weight) for link in inner)
    kept, carried = [], 0.0
    for link in inner:
        if total > 0 and carried >= share * total:
            break
        kept.append(link)
        carried += abs(link.weight)
    return to_metric + kept
