"""Exact co-firing counts between features on the same token, and each feature's top partners by Jaccard.

Memory is one int32 matrix [d_sae, d_sae + 1] (symmetric): 85 MB at d_sae = 4608, 256 MB at the
default limit d_sae = 8192. Larger dictionaries skip co-occurrence; an approximate sketch (MinHash) would
still need an all-pairs pass over d_sae^2 signatures at the end, so it is left out on purpose.
"""
from __future__ import annotations

import torch
from torch import Tensor

PAIR_CHUNK = 8_000_000
"""Most (i, j) pairs materialised at once; bounds the temporary memory of a batch to ~64 MB."""


class CooccurrenceCounter:
    """Counts, for every ordered pair of features (i, j), the tokens on which both fire (diagonal: own count).

    Cost per batch is proportional to sum over tokens of L0^2 (for TopK-like activations, L0 = 32: ~1000
    adds per token); a dense B^T B matmul would cost 2 * d_sae^2 flops per token instead. Both (i, j) and
    (j, i) are counted, twice the adds of the upper triangle alone, because firings are visited in feature
    order: the adds of feature i all land in row i, which stays in cache, whereas the upper triangle's adds
    (in token order) hit random rows of the whole matrix and measured 2-3x slower.
    """

    def __init__(self, d_sae: int, device: str | torch.device):
        self.d_sae = d_sae
        # column d_sae of each row absorbs padding pairs, so no masking is needed (it is slow) and the
        # padding adds land in the row being worked on
        self.counts = torch.zeros(d_sae, d_sae + 1, dtype=torch.int32, device=device)
        self.key_dtype = torch.int32 if d_sae * (d_sae + 1) < 2 ** 31 else torch.long

    def update(self, token: Tensor, feature: Tensor) -> None:
        """Add the firings of one batch; entries must be sorted by token, then feature (nonzero() order)."""
        if token.numel() == 0:
            return
        l0 = torch.bincount(token)  # [n_tok] firings per token
        start = torch.cumsum(l0, 0) - l0
        by_feature = torch.argsort(feature)
        width, squares = int(l0.max()), int((l0 * l0).sum())
        if width * token.numel() <= 4 * squares:
            self._update_padded(token, feature, l0, start, width, by_feature)  # TopK-like: L0 about constant
        else:
            self._update_ragged(token, feature, l0, start, by_feature)

    def _update_padded(self, token: Tensor, feature: Tensor, l0: Tensor, start: Tensor, width: int,
                       by_feature: Tensor) -> None:
        """Each firing against a [n_tok, max L0] table of its token's features, padded with d_sae."""
        d, kd = self.d_sae, self.key_dtype
        col = torch.arange(len(token), device=token.device) - start[token]
        table = torch.full((len(l0), width), d, dtype=kd, device=token.device)
        table.view(-1)[token * width + col] = feature.to(kd)
        step = max(PAIR_CHUNK // width, 1)
        for r0 in range(0, len(by_feature), step):
            idx = by_feature[r0:r0 + step]
            keys = torch.add(table.index_select(0, token[idx]), feature[idx].to(kd)[:, None], alpha=d + 1)
            self._add(keys.view(-1))

    def _update_ragged(self, token: Tensor, feature: Tensor, l0: Tensor, start: Tensor,
                       by_feature: Tensor) -> None:
        """Pairs generated entry by entry (no padding), for tokens with very uneven L0."""
        n_partners = l0[token[by_feature]]  # every firing of the same token, itself included
        bounds = torch.cumsum(n_partners, 0)
        begin, n = 0, len(by_feature)
        while begin < n:
            # cut where the running pair count crosses the chunk size, always at least one entry
            base = int(bounds[begin - 1]) if begin else 0
            stop = max(int(torch.searchsorted(bounds, base + PAIR_CHUNK, right=True)), begin + 1)
            idx, n_p = by_feature[begin:stop], n_partners[begin:stop]
            src = torch.repeat_interleave(idx, n_p)
            first = torch.repeat_interleave(torch.cumsum(n_p, 0) - n_p, n_p)
            offset = torch.arange(len(src), device=src.device) - first  # partner's rank within its token
            self._add(feature[src] * (self.d_sae + 1) + feature[start[token[src]] + offset])
            begin = stop

    def _add(self, flat: Tensor) -> None:
        if flat.numel():
            ones = torch.ones(1, dtype=torch.int32, device=flat.device).expand(flat.numel())
            self.counts.view(-1).index_add_(0, flat, ones)

    def top_jaccard(self, fire_count: Tensor, n: int, block: int = 1024) -> tuple[Tensor, Tensor]:
        """For each feature, the n other features with the highest Jaccard index |A and B| / |A or B|.

        Returns (ids [d_sae, n] with -1 where fewer than n features ever co-fire, jaccard [d_sae, n]).
        """
        d = self.d_sae
        pairs = self.counts[:, :d]
        n = min(n, max(d - 1, 0))
        ids = torch.full((d, n), -1, dtype=torch.long)
        vals = torch.zeros((d, n), dtype=torch.float64)
        fc = fire_count.double().to(pairs.device)
        for i0 in range(0, d, block):  # blocked: one [block, d_sae] slice of the symmetric matrix at a time
            i1 = min(i0 + block, d)
            both = pairs[i0:i1].double()  # [b, d_sae]
            union = fc[i0:i1, None] + fc[None, :] - both
            jac = torch.where(both > 0, both / union.clamp(min=1), torch.full_like(both, -1.0))
            jac[torch.arange(i1 - i0), torch.arange(i0, i1)] = -1.0
            top_vals, top_ids = torch.topk(jac, n, dim=1)
            ok = top_vals > 0
            ids[i0:i1] = torch.where(ok, top_ids, -1).cpu()
            vals[i0:i1] = torch.where(ok, top_vals, 0.0).cpu()
        return ids, vals
