"""Exact co-firing counts between features on the same token, and each feature's top partners by Jaccard, at any
d_sae: counted sparsely from the firing log (analysis.features.firing_log) once the pass is over.

Features are taken in blocks. A block's pairs are every firing of a block feature against every firing of the
same token (itself included: the diagonal is the feature's own count), as uint32 keys row * (d_sae + 1) +
partner, sorted and run-length counted, so only pairs that do fire together ever exist. A block is cut so that
it generates at most PAIR_CHUNK pair keys: memory stays at ~PAIR_CHUNK x 30 bytes whatever d_sae, with no
d_sae^2 term (a dense counter needs d_sae^2 x 4 bytes: 17 GB at 65,536). A feature whose pairs alone exceed
PAIR_CHUNK is counted into a dense [d_sae] row, PAIR_CHUNK pairs at a time.

Cost: sum over tokens of L0^2 keys generated and sorted (TopK, L0 = 32: ~1,000 per token), then a few passes
over the distinct pairs to rank each feature's partners.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from analysis.features.firing_log import FiringLog, LogArrays
from analysis.features.ranking import group_bounds, segment_ids, stable_argsort

PAIR_CHUNK = 8_000_000
"""Most (i, j) pair keys materialised at once (~32 MB of keys, ~250 MB with the temporaries of a block)."""

ROW_BITS = 17
"""A block spans at most 2**ROW_BITS features, so a partner's rank key (row, coarse Jaccard) fits in uint32."""


@dataclass
class PairBlock:
    """Co-firing counts of features [f0, f1) with every feature, sorted by (row, partner)."""

    f0: int
    f1: int
    row: np.ndarray
    """Feature - f0."""
    partner: np.ndarray
    """Co-firing feature; d_sae marks padding of the token table (count meaningless), to be ignored."""
    count: np.ndarray
    """Tokens on which both fire (row == partner - f0 holds the feature's own count)."""
    row_first: np.ndarray
    """[f1 - f0 + 1] where each row's entries start (and the end)."""


class CooccurrenceCounter:
    """Co-firing counts read from a firing log (shared with the feature statistics, or its own when fed with
    `update`)."""

    def __init__(self, d_sae: int, device: str | torch.device = "cpu", log: FiringLog | None = None):
        self.d_sae = d_sae
        self.log = log if log is not None else FiringLog(d_sae)
        self._next_token = 0

    def update(self, token: torch.Tensor, feature: torch.Tensor) -> None:
        """Add one batch's firings, sorted by token then feature; tokens are rows of the batch (as
        `find_firings` gives them), renumbered here so batches never share a token."""
        if token.numel() == 0:
            return
        global_token = token.cpu().long() + self._next_token
        self._next_token = int(global_token.max()) + 1
        self.log.append(global_token, feature, torch.ones(len(token)))

    def blocks(self) -> Iterator[PairBlock]:
        log = self.log.arrays()
        partners = _Partners(log, self.d_sae)
        by_feature = log.by_feature()
        stride = self.d_sae + 1
        max_rows = max(min(2 ** 32 // stride, 2 ** ROW_BITS), 1)  # keys row * stride + partner fit in uint32
        for lo, hi in _cuts(log.feature[by_feature], partners.load[by_feature], max_rows):
            entries = by_feature[lo:hi]
            f0, f1 = int(log.feature[entries[0]]), int(log.feature[entries[-1]]) + 1
            if partners.load[entries].sum() > PAIR_CHUNK:  # one feature on its own (see _cuts)
                yield self._dense_row(partners, entries, f0)
                continue
            row_key = (log.feature[entries].astype(np.uint32) - np.uint32(f0)) * np.uint32(stride)
            keys = partners.keys(entries, row_key)
            keys.sort()  # uint32: numpy's vectorised sort, ~5x faster than on int64
            first, count = group_bounds(keys)
            keys = keys[first]
            row_first = np.searchsorted(keys, np.arange(f1 - f0 + 1, dtype=np.int64) * stride)  # no division
            row = segment_ids(np.diff(row_first))
            yield PairBlock(f0, f1, row, keys.astype(np.int64) - row * stride, count, row_first)

    def _dense_row(self, partners: _Partners, entries: np.ndarray, f0: int) -> PairBlock:
        row = np.zeros(self.d_sae + 1, np.int64)
        load = np.cumsum(partners.load[entries])
        lo = 0
        while lo < len(entries):
            hi = max(int(np.searchsorted(load, (load[lo - 1] if lo else 0) + PAIR_CHUNK, "right")), lo + 1)
            row += np.bincount(partners.keys(entries[lo:hi], np.zeros(hi - lo, np.uint32)), minlength=len(row))
            lo = hi
        partner = np.flatnonzero(row[:-1])
        return PairBlock(f0, f0 + 1, np.zeros(len(partner), np.int64), partner, row[partner],
                         np.array([0, len(partner)]))

    @property
    def counts(self) -> torch.Tensor:
        """[d_sae, d_sae] int32 dense counts (diagonal: own count): for checks on small dictionaries only."""
        out = torch.zeros(self.d_sae, self.d_sae, dtype=torch.int32)
        for b in self.blocks():
            real = b.partner < self.d_sae
            out[torch.from_numpy(b.row[real] + b.f0), torch.from_numpy(b.partner[real])] = \
                torch.from_numpy(b.count[real]).int()
        return out

    def top_jaccard(self, fire_count, n: int) -> tuple[np.ndarray, np.ndarray]:
        """For each feature, the n other features with the highest Jaccard index |A and B| / |A or B| (ties: the
        lower feature id). Returns (ids [d_sae, n] int64 with -1 where fewer than n features ever co-fire,
        jaccard [d_sae, n] float64 with 0 there)."""
        d = self.d_sae
        fc = np.asarray(fire_count.cpu() if isinstance(fire_count, torch.Tensor) else fire_count, np.float64)
        fc = np.append(fc, np.inf)  # padding partners (id d) get Jaccard 0
        n = min(n, max(d - 1, 0))
        ids = np.full((d, n), -1, np.int64)
        vals = np.zeros((d, n), np.float64)
        for b in self.blocks():
            jac = b.count / (fc[b.f0:b.f1][b.row] + fc[b.partner] - b.count)
            jac[b.partner == b.row + b.f0] = 0.0  # not its own partner; 0 ranks below every real partner
            idx, rank = _top_per_row(b.row, jac, b.row_first, n)
            idx, rank = idx[jac[idx] > 0], rank[jac[idx] > 0]  # rows with fewer than n partners
            ids[b.row[idx] + b.f0, rank] = b.partner[idx]
            vals[b.row[idx] + b.f0, rank] = jac[idx]
        return ids, vals


def _top_per_row(row: np.ndarray, jac: np.ndarray, row_first: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(index, rank) of each row's n entries with the highest jac, ties to the earlier entry.

    Each row's n-th highest is found on a coarse key (row, the top 15 bits of the float32 rounding, which only
    ever merge values, never reorder them) with one uint32 sort; the entries at or above it are then ranked
    exactly on float64.
    """
    if len(row) == 0 or n == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty
    coarse = np.uint32(0x7FFF) - (jac.astype(np.float32).view(np.uint32) >> np.uint32(16))  # descending, 15 bits
    key = (row.astype(np.uint32) << np.uint32(15)) | coarse
    ordered = np.sort(key)
    nth = ordered[np.minimum(row_first[:-1] + n - 1, np.maximum(row_first[1:] - 1, 0))]
    cand = np.flatnonzero(key <= nth[row])
    by_jac = cand[stable_argsort(-jac[cand])]
    order = by_jac[stable_argsort(row[by_jac])]  # (row, jac descending, index)
    g = row[order]
    start = np.concatenate([[True], g[1:] != g[:-1]])
    pos = np.arange(len(order))
    rank = pos - np.maximum.accumulate(np.where(start, pos, 0))
    return order[rank < n], rank[rank < n]


def _cuts(feature: np.ndarray, load: np.ndarray, max_rows: int) -> Iterator[tuple[int, int]]:
    """Ranges of entries (sorted by feature) holding whole features, at most PAIR_CHUNK pairs and features
    spanning at most max_rows ids, or one feature alone where its own pairs exceed that."""
    if len(feature) == 0:
        return
    ends = np.append(np.flatnonzero(feature[1:] != feature[:-1]) + 1, len(feature))  # end of each feature's run
    cum = np.cumsum(load)[ends - 1]  # pairs up to the end of each feature
    ids = feature[ends - 1].astype(np.int64)
    lo, k0, done = 0, 0, 0
    while lo < len(feature):
        k = int(np.searchsorted(cum, done + PAIR_CHUNK, "right")) - 1
        k = min(k, int(np.searchsorted(ids, ids[k0] + max_rows, "left")) - 1)
        k = max(k, k0)  # at least one feature
        yield lo, int(ends[k])
        lo, k0, done = int(ends[k]), k + 1, int(cum[k])


class _Partners:
    """Each firing's partners: the features of its token (itself included).

    TopK-like activations (L0 about constant) use a table [n_tokens, max L0] of each token's features, padded
    with d_sae: a block's keys are then one gather of whole rows. Uneven L0 generates pairs entry by entry.
    """

    def __init__(self, log: LogArrays, d_sae: int):
        self.feature = log.feature
        first, l0 = group_bounds(log.token)
        token_of = segment_ids(l0)  # each entry's token (its run in the log)
        self.run_start, self.load = first[token_of], l0[token_of]  # pairs each firing generates: its token's L0
        width = int(l0.max()) if len(l0) else 0
        self.table = None
        if width * len(l0) <= 2 * len(log):
            self.table = np.full((len(l0), width), d_sae, np.uint32)
            self.table[token_of, np.arange(len(log)) - self.run_start] = log.feature
            self.token_of, self.load = token_of, np.full(len(log), width)

    def keys(self, entries: np.ndarray, row_key: np.ndarray) -> np.ndarray:
        """uint32 row_key[i] + partner for every partner of each entry (padding partners are d_sae)."""
        if self.table is not None:
            return (self.table[self.token_of[entries]] + row_key[:, None]).reshape(-1)
        n_partners = self.load[entries]
        which = segment_ids(n_partners)
        first = (self.run_start[entries] - (np.cumsum(n_partners) - n_partners))[which]
        return row_key[which] + self.feature[first + np.arange(len(which))].astype(np.uint32)
