"""Faithfulness of a pruned graph, measured by ablation (Marks et al.'s ablation.py):

    recovered    F(C) = (m(C) - m(empty)) / (m(M) - m(empty))
    top_removed  (m(M) - m(M without the top n nodes)) / (m(M) - m(empty))

m(C): the metric with every feature and error node outside C replaced by its baseline (mean or zero) at every
site, downstream dictionaries encoding what the ablated upstream gives them; M is every node, empty none.
Position 0 (the attention sink of most models, left out of the feature statistics) is never ablated.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from analysis.attribution.graph import Node
from analysis.attribution.splice import Baseline, Site, run_ablated


@dataclass(frozen=True)
class Faithfulness:
    full: float
    """m(M): every node kept (the spliced model, which is the model)."""
    empty: float
    """m(empty): every node at positions >= 1 ablated."""
    graph: float
    """m(C): only the graph's nodes kept."""
    without_top: float
    """m(M without the top nodes)."""
    top_n: int
    """How many of the graph's feature nodes (largest attribution first) were ablated for top_removed."""
    pruned: float | None = None
    """m(C0) of the attribution-pruned graph the refinement started from (None: not refined)."""
    rounds: int = 0
    """Refinement rounds taken."""

    def _share(self, value: float) -> float | None:
        span = self.full - self.empty
        return None if abs(span) < 1e-9 else value / span

    @property
    def recovered(self) -> float | None:
        return self._share(self.graph - self.empty)

    @property
    def recovered_pruned(self) -> float | None:
        """What attribution pruning alone recovered: the baseline the refined graph must beat."""
        return None if self.pruned is None else self._share(self.pruned - self.empty)

    @property
    def top_removed(self) -> float | None:
        return self._share(self.full - self.without_top)


def keep_masks(sites: list[Site], n_pos: int, nodes: list[Node] | None, drop: list[Node] = (),
               first_pos: int = 1, device=None) -> list[tuple[Tensor, Tensor]]:
    """Per site, ([pos, d_sae], [pos]) masks: the listed nodes kept (None: every node), `drop` ablated, positions
    before first_pos always kept."""
    masks = []
    for s in sites:
        kf = torch.full((n_pos, s.d_sae), nodes is None, dtype=torch.bool, device=device)
        ke = torch.full((n_pos,), nodes is None, dtype=torch.bool, device=device)
        kf[:first_pos], ke[:first_pos] = True, True
        masks.append((kf, ke))
    for n, value in [(n, True) for n in nodes or ()] + [(n, False) for n in drop]:
        kf, ke = masks[n.site]
        if n.feature is None:
            ke[n.pos] = value
        else:
            kf[n.pos, n.feature] = value
    return masks


def top_nodes(nodes: list[Node], n: int = 10) -> list[Node]:
    """The graph's n feature nodes of largest attribution (those that support the target most)."""
    return sorted((x for x in nodes if x.feature is not None), key=lambda x: -x.attribution)[:n]


def faithfulness(model, tokens: Tensor, sites: list[Site], nodes: list[Node], baseline: Baseline, target: int,
                 contrast: int | None, top_n: int = 10, first_pos: int = 1, pruned: float | None = None,
                 rounds: int = 0) -> Faithfulness:
    """Four ablated runs: every node, none, the graph's nodes, every node but the graph's top `top_n`
    (`pruned`, `rounds`: what the refinement started from and took, carried along)."""
    n_pos, dev = tokens.shape[1], tokens.device

    def metric(keep: list[Node] | None, drop: list[Node] = ()) -> float:
        masks = keep_masks(sites, n_pos, keep, drop, first_pos, dev)
        return run_ablated(model, tokens, sites, masks, baseline, target, contrast)

    top = top_nodes(nodes, top_n)
    return Faithfulness(full=metric(None), empty=metric([]), graph=metric(nodes), without_top=metric(None, top),
                        top_n=len(top), pruned=pruned, rounds=rounds)
