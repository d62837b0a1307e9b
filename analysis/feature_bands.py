"""Uniform samples of firings per (feature, activation band), with bands relative to a max that keeps growing.

Band b of a feature with max M holds activations in (b/Q, (b+1)/Q] x M. Each firing carries a hash key that
does not depend on its activation; group (feature, band) keeps every firing whose key is below tau, at most
`cap` of them (tau is the smallest key that did not fit). When M grows, stored samples are re-assigned and a
new band inherits the smallest tau of the old bands it overlaps, so "sample = all firings of the band with
key < tau" holds at every step. See analysis.feature_stats for the whole picture.
"""
from __future__ import annotations

import torch
from torch import Tensor

from analysis.slots import Candidates, SlotTable
from analysis.streaming import INT64_MAX, KEY_BITS, hash_keys


def band_of(value: Tensor, max_act: Tensor, n_bands: int) -> Tensor:
    """Band index of each activation: b such that b/Q < value / max <= (b+1)/Q (float64 to match tests)."""
    ratio = value.double() * n_bands / max_act.double()
    return (torch.ceil(ratio).long() - 1).clamp(0, n_bands - 1)


class BandSampler:
    """Per (feature, band) threshold samples of firings; rows of the table are feature * Q + band."""

    def __init__(self, d_sae: int, n_bands: int, cap: int, window: int, seed: int,
                 device: str | torch.device):
        if d_sae * n_bands >= 2 ** (63 - KEY_BITS):
            raise ValueError(f"d_sae * n_quantiles must be below {2 ** (63 - KEY_BITS)}")
        self.d_sae, self.n_bands, self.seed = d_sae, n_bands, seed
        self.table = SlotTable(d_sae * n_bands, cap, window, score_bits=KEY_BITS, device=device)
        self.tau = torch.full((d_sae * n_bands,), INT64_MAX, dtype=torch.long, device=device)
        self.ref_max = torch.zeros(d_sae, dtype=torch.float32, device=device)
        """The max the current band assignment refers to."""

    def update(self, feature: Tensor, value: Tensor, ctx: Tensor, position: Tensor, new_max: Tensor,
               windows) -> None:
        """Offer one batch's firings; `new_max` [d_sae] already includes this batch."""
        grown = (new_max > self.ref_max).nonzero(as_tuple=True)[0]
        if grown.numel():
            self._reband(grown, self.ref_max[grown].clone(), new_max[grown])
            self.ref_max[grown] = new_max[grown]
        group = feature * self.n_bands + band_of(value, self.ref_max[feature], self.n_bands)
        key = hash_keys(ctx, position, feature, self.seed)
        idx = (key < self.tau[group]).nonzero(as_tuple=True)[0]
        self._insert(Candidates(group=group[idx], score=key[idx], value=value[idx], context_id=ctx[idx],
                                position=position[idx], windows=lambda j: windows(idx[j])))

    def _insert(self, c: Candidates) -> None:
        groups, kth = self.table.merge(c)
        self.tau[groups] = torch.minimum(self.tau[groups], kth)

    def _reband(self, features: Tensor, old_max: Tensor, new_max: Tensor) -> None:
        """Move the stored samples of `features` to bands of their new max, keeping the threshold invariant."""
        q = self.n_bands
        rows = (features[:, None] * q + torch.arange(q, device=features.device)).reshape(-1)  # [f * Q]
        # old band b spans (b, b+1] x old/Q, which meets new bands floor(b r) .. ceil((b+1) r) - 1, r = old/new
        b = torch.arange(q, device=features.device, dtype=torch.float64)
        r = (old_max.double() / new_max.double())[:, None]
        lo = torch.floor(b * r).long().clamp(0, q - 1)
        hi = (torch.ceil((b + 1) * r).long() - 1).clamp(0, q - 1)
        old_tau = self.tau[rows].view(-1, q)
        new_tau = torch.full_like(old_tau, INT64_MAX).view(-1)
        local = torch.arange(len(features), device=features.device)[:, None] * q
        for edge in (lo, hi):  # an old band overlaps at most two new bands (the max only grows)
            new_tau.scatter_reduce_(0, (local + edge).reshape(-1), old_tau.reshape(-1), reduce="amin")
        stored, _ = self.table.take(rows)
        self.table.clear(rows)
        self.tau[rows] = new_tau
        feat = stored.group // q
        value = stored.value
        group = feat * q + band_of(value, new_max[_position_in(features, feat)], q)
        keep = (stored.score < self.tau[group]).nonzero(as_tuple=True)[0]
        self._insert(Candidates(group=group[keep], score=stored.score[keep], value=value[keep],
                                context_id=stored.context_id[keep], position=stored.position[keep],
                                windows=lambda j: stored.windows(keep[j])))


def _position_in(sorted_ids: Tensor, ids: Tensor) -> Tensor:
    """Index of each of `ids` in the sorted tensor `sorted_ids` (every id must be present)."""
    return torch.searchsorted(sorted_ids, ids)
