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
        # one extra counter at the end absorbs padding pairs, so no boolean masking is needed (it is slow)
        self.counts = torch.zeros(d_sae * d_sae + 1, dtype=torch.int32, device=device)

    def update(self, token: Tensor, feature: Tensor) -> None:
        """Add the firings of one batch; entries must be sorted by token, then feature (nonzero() order)."""
        if token.numel() < 2:
            return
        _, l0 = torch.unique_consecutive(token, return_counts=True)
        if int(l0.max()) ** 2 * len(l0) <= 4 * int((l0 * l0).sum()):
            self._update_padded(token, feature, l0)  # TopK-like: every token has about the same L0
        else:
            self._update_ragged(feature, l0)

    def _update_padded(self, token: Tensor, feature: Tensor, l0: Tensor) -> None:
        """Pairs from a [n_tok, max L0] table of each token's features, padded with -1."""
        width = int(l0.max())
        row = torch.repeat_interleave(torch.arange(len(l0), device=token.device), l0)
        col = torch.arange(len(token), device=token.device) - torch.repeat_interleave(torch.cumsum(l0, 0) - l0, l0)
        table = torch.full((len(l0), width), -1, dtype=torch.long, device=token.device)
        table[row, col] = feature
        first, second = torch.triu_indices(width, width, offset=1, device=token.device)
        step = max(PAIR_CHUNK // max(len(first), 1), 1)
        for r0 in range(0, len(l0), step):
            a, b = table[r0:r0 + step, first], table[r0:r0 + step, second]  # [rows, pairs], a < b
            self._add(torch.where(b >= 0, a * self.d_sae + b, self.d_sae * self.d_sae).reshape(-1))

    def _update_ragged(self, feature: Tensor, l0: Tensor) -> None:
        """Pairs generated entry by entry (no padding), for tokens with very uneven L0."""
        n = feature.numel()
        idx = torch.arange(n, device=feature.device)
        end = torch.repeat_interleave(torch.cumsum(l0, 0), l0)  # one past the last entry of each token
        n_partners = end - idx - 1  # later entries of the same token, all with a larger feature id
        bounds = torch.cumsum(n_partners, 0)
        start = 0
        while start < n:
            # cut where the running pair count crosses the chunk size, always at least one entry
            base = int(bounds[start - 1]) if start else 0
            stop = max(int(torch.searchsorted(bounds, base + PAIR_CHUNK, right=True)), start + 1)
            src = torch.repeat_interleave(idx[start:stop], n_partners[start:stop])
            first_pair = torch.cumsum(n_partners[start:stop], 0) - n_partners[start:stop]
            offset = torch.arange(len(src), device=src.device) - torch.repeat_interleave(
                first_pair, n_partners[start:stop])
            self._add(feature[src].long() * self.d_sae + feature[src + 1 + offset].long())
            start = stop

    def _add(self, flat: Tensor) -> None:
        if flat.numel():
            self.counts.index_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))

    def top_jaccard(self, fire_count: Tensor, n: int, block: int = 1024) -> tuple[Tensor, Tensor]:
        """For each feature, the n other features with the highest Jaccard index |A and B| / |A or B|.

        Returns (ids [d_sae, n] with -1 where fewer than n features ever co-fire, jaccard [d_sae, n]).
        """
        d = self.d_sae
        upper = self.counts[:d * d].view(d, d)
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
