"""The graph's feature nodes refined for the graph-only model, the model its faithfulness figure measures.

Attribution ranks nodes by their first-order effect at the clean run; "recovered" asks what the graph does with
everything outside it ablated at every dictionary, downstream dictionaries encoding what the ablated upstream gives
them: across several dictionaries a model far from linear in the nodes, where the clean run's ranking picks a set
that recovers little (on the demo's four residual dictionaries, 50 feature nodes recovered -14% to 11% of the
logit difference on capital-city prompts). `refine` starts from the pruned feature nodes and, each round:
  1. one forward and backward of the graph-only model with every feature node behind a gate (1 kept, 0 at its
     baseline): dm/dgate, the first-order change of the metric when a node is added or removed (the attribution
     of each node in the graph-only model);
  2. candidate graphs: the j most promising additions swapped for the j least useful kept nodes (j = 1..width),
     and each of the 2 x width best additions swapped for each of the 4 least useful kept nodes (one swap: the
     first-order ranking is often wrong in so nonlinear a model, and measuring many small moves finds the good
     ones);
  3. every candidate measured in one batched forward with 0/1 gates (exactly the ablation of the faithfulness
     figure); the one whose metric is closest to the full model's is taken if it is closer than the current
     graph's, else the search stops.
The number of feature nodes never grows; error nodes stay as pruned; position 0 is never ablated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from analysis.attribution.faithfulness import keep_masks
from analysis.attribution.graph import Node, NodeScores
from analysis.attribution.splice import Baseline, Site, run_gated

PAIRED_DROPS = 4
"""Single swaps pair each of the 2 x width best additions with each of this many least useful kept nodes."""
CHUNK = 16
"""Candidate graphs measured per batched forward."""
TOKEN_BUDGET = 1024
"""Tokens measured per round at most (candidates x prompt length): a long prompt gets fewer single swaps."""
Key = tuple[int, int, int]
"""(site, pos, feature) of a feature node."""


@dataclass(frozen=True)
class Refinement:
    nodes: list[Node]
    """The refined graph's nodes: its feature nodes, then the error nodes it started with."""
    history: list[float]
    """The graph-only metric after each accepted round (the first: the attribution-pruned graph)."""
    full: float
    """The metric with every node kept, which the search aims at."""


def _gates(sites: list[Site], masks: list[tuple[Tensor, Tensor]], sets: list[set[Key]], first_pos: int,
           ) -> list[tuple[Tensor, Tensor]]:
    """Per site, [b, pos, d_sae] feature gates (1 for a set's nodes and positions before first_pos) and [b, pos]
    error gates (the graph's error mask)."""
    out = []
    for i, (s, (_, ke)) in enumerate(zip(sites, masks)):
        gf = torch.zeros(len(sets), ke.shape[0], s.d_sae, device=ke.device)
        gf[:, :first_pos] = 1.0
        for b, chosen in enumerate(sets):
            for site, pos, feature in chosen:
                if site == i:
                    gf[b, pos, feature] = 1.0
        out.append((gf, ke.float().expand(len(sets), -1).clone()))
    return out


@torch.enable_grad()
def _gradient(model, tokens, sites, masks, chosen: set[Key], baseline, target, contrast, first_pos):
    """(metric, per-site [pos, d_sae] dm/dgate) of the graph-only model."""
    gates = _gates(sites, masks, [chosen], first_pos)
    for gf, _ in gates:
        gf.requires_grad_(True)
    metric = run_gated(model, tokens, sites, gates, baseline, target, contrast)[0]
    grads = torch.autograd.grad(metric, [gf for gf, _ in gates], allow_unused=True)
    return float(metric.detach()), [torch.zeros_like(gf[0]) if g is None else g[0] for g, (gf, _) in zip(grads, gates)]


def _candidates(grads: list[Tensor], chosen: set[Key], sign: float, width: int, first_pos: int,
                budget: int) -> list[set[Key]]:
    adds = []
    for i, g in enumerate(grads):
        gain = g.detach() * sign
        gain[:first_pos] = float("-inf")
        for site, pos, feature in chosen:
            if site == i:
                gain[pos, feature] = float("-inf")
        top = torch.topk(gain.flatten(), min(2 * width, gain.numel()))
        adds += [(float(v), (i, int(ix) // g.shape[1], int(ix) % g.shape[1]))
                 for v, ix in zip(top.values, top.indices) if v > float("-inf")]
    adds.sort(key=lambda a: -a[0])
    drops = sorted(chosen, key=lambda k: float(grads[k[0]][k[1], k[2]]) * sign)
    out = []
    for j in range(1, min(width, len(adds), len(drops)) + 1):
        out.append((chosen - set(drops[:j])) | {key for _, key in adds[:j]})
    out += [(chosen - {drop}) | {key} for _, key in adds[:2 * width] for drop in drops[:PAIRED_DROPS]]
    return out[:max(2 * width, budget)]


@torch.no_grad()
def refine(model, tokens: Tensor, sites: list[Site], scores: NodeScores, nodes: list[Node], baseline: Baseline,
           target: int, contrast: int | None, rounds: int = 20, width: int = 8, first_pos: int = 1,
           tick: Callable[[], None] | None = None) -> Refinement:
    """The graph's feature nodes swapped, round by round, towards the set whose graph-only metric is closest to
    the full model's (see the module docstring); at most `rounds` rounds of one forward and backward plus batched
    forwards of the width + 8 x width candidates (fewer on a long prompt: TOKEN_BUDGET tokens a round, at least
    2 x width candidates)."""
    errors = [n for n in nodes if n.feature is None]
    chosen = {(n.site, n.pos, n.feature) for n in nodes if n.feature is not None}
    masks = keep_masks(sites, tokens.shape[1], errors, first_pos=first_pos, device=tokens.device)
    full = scores.metric
    metric, grads = _gradient(model, tokens, sites, masks, chosen, baseline, target, contrast, first_pos)
    history = [metric]
    for _ in range(rounds if chosen else 0):
        sets = _candidates(grads, chosen, 1.0 if metric < full else -1.0, width, first_pos,
                           TOKEN_BUDGET // tokens.shape[1])
        if not sets:
            break
        measured = [m for lo in range(0, len(sets), CHUNK)
                    for m in run_gated(model, tokens, sites, _gates(sites, masks, sets[lo:lo + CHUNK], first_pos),
                                       baseline, target, contrast).tolist()]
        best = min(range(len(sets)), key=lambda b: abs(measured[b] - full))
        if abs(measured[best] - full) >= abs(metric - full):
            break
        chosen = sets[best]
        if tick is not None:
            tick()
        metric, grads = _gradient(model, tokens, sites, masks, chosen, baseline, target, contrast, first_pos)
        history.append(metric)
    feats = sorted((scores.node(site, feature, pos) for site, pos, feature in chosen),
                   key=lambda n: -abs(n.attribution))
    return Refinement(feats + errors, history, full)
