"""Ablate one node of an attribution graph and rerun: the metric before and after, to set beside the attribution's
prediction of the change.

Sign convention (graph.py): a node's attribution A is the first-order estimate of how much the metric m falls when
the node is replaced by its baseline b, A = (dm/da) (a - b). Ablating it, the predicted change is therefore -A:

    after - before  ~=  -A            (predicted_change)

exact where m is linear in the node (a dictionary at the last residual stream with the final norm's scale held at
its clean value), a first-order estimate elsewhere. A node already at its baseline (a zero activation under the
zero ablation) changes nothing. Ablation is that of faithfulness.py: at every site the features and errors are
re-encoded from what the model gives them, the ablated node replaced by its baseline (mean or zero).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from analysis.attribution.faithfulness import keep_masks
from analysis.attribution.graph import Node
from analysis.attribution.splice import Baseline, Site, run_ablated
from store.errors import InputError


@dataclass(frozen=True)
class NodeAblation:
    before: float
    """The metric with every node kept (the spliced model, which is the model)."""
    after: float
    """The metric with the node replaced by its baseline."""

    @property
    def change(self) -> float:
        return self.after - self.before


def predicted_change(attribution: float) -> float:
    """What attribution patching predicts ablating a node of attribution `attribution` does to the metric."""
    return -attribution


def site_index(sites: list[Site], dictionary: str) -> int:
    """The index of dictionary `dictionary` among the sites; InputError when it is not spliced in."""
    for i, site in enumerate(sites):
        if site.name == dictionary:
            return i
    raise InputError(f"dictionary {dictionary!r} is not among the graph's dictionaries "
                     f"({', '.join(s.name for s in sites)})")


def _check(sites: list[Site], n_pos: int, site: int, feature: int | None, pos: int) -> None:
    if not 0 <= site < len(sites):
        raise InputError(f"site {site} is out of range: the graph has {len(sites)} dictionaries")
    if not 0 <= pos < n_pos:
        raise InputError(f"position {pos} is out of range: the prompt has positions 0..{n_pos - 1}")
    if feature is not None and not 0 <= feature < sites[site].d_sae:
        raise InputError(f"feature {feature} is out of range: {sites[site].name} has features "
                         f"0..{sites[site].d_sae - 1}")


def ablate_node(model, tokens: Tensor, sites: list[Site], target: int, contrast: int | None, baseline: Baseline,
                site: int, feature: int | None, pos: int, freeze_final_norm: bool = False) -> NodeAblation:
    """The metric before and after replacing one node (feature `feature` of sites[site] at `pos`; feature None: the
    site's error node there) by its baseline. `freeze_final_norm` holds ln_final's scale at its clean value in both
    runs, as the node pass does when attributions are made with it."""
    n_pos, dev = tokens.shape[1], tokens.device
    _check(sites, n_pos, site, feature, pos)
    hooks = []
    if freeze_final_norm and "ln_final.hook_scale" in model.hook_dict:
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter="ln_final.hook_scale")
        clean = cache["ln_final.hook_scale"]
        hooks = [("ln_final.hook_scale", lambda scale, hook: clean)]
    node = Node(site, feature, pos, 0.0, 0.0)
    with model.hooks(fwd_hooks=hooks):
        before = run_ablated(model, tokens, sites, keep_masks(sites, n_pos, None, first_pos=0, device=dev),
                             baseline, target, contrast)
        after = run_ablated(model, tokens, sites, keep_masks(sites, n_pos, None, [node], first_pos=0, device=dev),
                            baseline, target, contrast)
    return NodeAblation(before, after)
