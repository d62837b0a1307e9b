"""Exact co-firing counts between features on the same token, and each feature's top partners by Jaccard.

Memory is one int32 matrix [d_sae, d_sae] (upper triangle used): 85 MB at d_sae = 4608, 256 MB at the
default limit d_sae = 8192. Larger dictionaries skip co-occurrence; an approximate sketch (MinHash) would
still need an all-pairs pass over d_sae^2 signatures at the end, so it is left out on purpose.
"""
from __future__ import annotations

import torch
from torch import Tensor

PAIR_CHUNK = 8_000_000
"""Most (i, j) pairs materialised at once; bounds the temporary memory of a batch to ~200 MB."""


class CooccurrenceCounter:
    """Counts, for every pair of features i < j, the tokens on which both fire.

    Cost per batch is proportional to sum over tokens of L0^2 / 2 (pairs are generated from the sparse
    firings), which for TopK-like activations (L0 = 32) is ~500 scatter-adds per token; a dense B^T B matmul
    would cost 2 * d_sae^2 flops per token instead.
    """

    def __init__(self, d_sae: int, device: str | torch.device):
        self.d_sae = d_sae
        self.counts = torch.zeros(d_sae * d_sae, dtype=torch.int32, device=device)

    def update(self, token: Tensor, feature: Tensor) -> None:
        """Add the firings of one batch; entries must be sorted by token, then feature (nonzero() order)."""
        n = token.numel()
        if n < 2:
            return
        is_last = torch.ones(n, dtype=torch.bool, device=token.device)
        is_last[:-1] = token[1:] != token[:-1]
        idx = torch.arange(n, device=token.device)
        # end[i] = one past the last entry of i's token: a reverse cumulative min over row ends
        row_end = torch.where(is_last, idx + 1, torch.full_like(idx, n))
        end = torch.flip(torch.cummin(torch.flip(row_end, [0]), 0).values, [0])
        n_partners = end - idx - 1  # later entries of the same token, all with a larger feature id
        bounds = torch.cumsum(n_partners, 0)
        start = 0
        while start < n:
            # cut where the running pair count crosses the chunk size, always at least one entry
            base = int(bounds[start - 1]) if start else 0
            stop = max(int(torch.searchsorted(bounds, base + PAIR_CHUNK, right=True)), start + 1)
            self._add_pairs(idx[start:stop], n_partners[start:stop], feature)
            start = stop

    def _add_pairs(self, src_entries: Tensor, n_partners: Tensor, feature: Tensor) -> None:
        total = int(n_partners.sum())
        if total == 0:
            return
        src = torch.repeat_interleave(src_entries, n_partners)
        first_pair = torch.cumsum(n_partners, 0) - n_partners
        offset = torch.arange(total, device=src.device) - torch.repeat_interleave(first_pair, n_partners)
        partner = src + 1 + offset
        flat = feature[src].long() * self.d_sae + feature[partner].long()
        self.counts.index_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))

    def top_jaccard(self, fire_count: Tensor, n: int, block: int = 1024) -> tuple[Tensor, Tensor]:
        """For each feature, the n other features with the highest Jaccard index |A and B| / |A or B|.

        Returns (ids [d_sae, n] with -1 where fewer than n features ever co-fire, jaccard [d_sae, n]).
        """
        d = self.d_sae
        upper = self.counts.view(d, d)
        n = min(n, max(d - 1, 0))
        ids = torch.full((d, n), -1, dtype=torch.long)
        vals = torch.zeros((d, n), dtype=torch.float64)
        fc = fire_count.double().to(upper.device)
        for i0 in range(0, d, block):  # blocked: one [block, d_sae] slice of the symmetric matrix at a time
            i1 = min(i0 + block, d)
            both = (upper[i0:i1] + upper[:, i0:i1].T).double()  # [b, d_sae]
            union = fc[i0:i1, None] + fc[None, :] - both
            jac = torch.where(both > 0, both / union.clamp(min=1), torch.full_like(both, -1.0))
            jac[torch.arange(i1 - i0), torch.arange(i0, i1)] = -1.0
            top_vals, top_ids = torch.topk(jac, n, dim=1)
            ok = top_vals > 0
            ids[i0:i1] = torch.where(ok, top_ids, -1).cpu()
            vals[i0:i1] = torch.where(ok, top_vals, 0.0).cpu()
        return ids, vals
