"""Vectorised building blocks for one-pass feature statistics.

Everything here works on flat lists of non-zero entries (token, feature, activation) so the cost of a batch
grows with its number of firings, not with n_tokens x d_sae.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

KEY_BITS = 40
"""Sampling keys are 40-bit integers: collisions within one (feature, band) are rare enough to ignore."""

_MASK32 = 0xFFFFFFFF
_MIX = 0x45D9F3B  # < 2**27, so a 32-bit value times it never overflows int64


def _mix32(x):
    """A well-tested 32-bit integer hash (two multiply-xorshift rounds); works on ints and int64 tensors."""
    x = (((x >> 16) ^ x) * _MIX) & _MASK32
    x = (((x >> 16) ^ x) * _MIX) & _MASK32
    return (x >> 16) ^ x


def hash_keys(context_ids: Tensor, positions: Tensor, features: Tensor, seed: int) -> Tensor:
    """Pseudo-random sampling key in [0, 2**KEY_BITS) for each (context, position, feature).

    A hash instead of a random generator: the key of a firing does not depend on how the corpus was split
    into batches, so a sample is reproducible and tests can recompute it by brute force.
    """
    return feature_keys(token_hash(context_ids, positions, seed), features)


def token_hash(context_ids: Tensor, positions: Tensor, seed: int) -> Tensor:
    """The (context, position) part of `hash_keys`: computed once per token, not once per firing."""
    x = _mix32((context_ids.long() & _MASK32) ^ _mix32(seed & _MASK32))
    return _mix32(x ^ (positions.long() & _MASK32))


def feature_keys(token_h: Tensor, features: Tensor) -> Tensor:
    """`hash_keys` from each firing's `token_hash` and feature."""
    hi = _mix32(token_h ^ (features.long() & _MASK32))
    lo = _mix32(hi ^ 0x9E3779B9)
    extra = KEY_BITS - 32  # low bits taken from a second hash
    return (hi << extra) | (lo >> (32 - extra))


@dataclass
class Firings:
    """The non-zero entries of a batch of activations, sorted by token then feature, all [M]."""

    token: Tensor
    """Row in the batch's [n_ctx * ctx_len, d_sae] activations."""
    feature: Tensor
    value: Tensor


def find_firings(flat: Tensor, ctx_len: int, skip_first: int) -> Firings:
    """Entries > 0 of contiguous activations flat [n_ctx * ctx_len, d_sae], leaving out the first `skip_first`
    positions of every context."""
    d_sae = flat.shape[1]
    kept_len = ctx_len - skip_first
    if kept_len <= 0 or flat.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=flat.device)
        return Firings(empty, empty, flat.new_zeros(0))
    if flat.device.type == "cpu":  # numpy's flatnonzero of a bool mask is ~4x faster than torch's nonzero
        mask = flat.detach().numpy().reshape(-1, ctx_len, d_sae)[:, skip_first:] > 0
        j = torch.from_numpy(np.flatnonzero(mask))
    else:
        j = (flat.view(-1, ctx_len, d_sae)[:, skip_first:] > 0).reshape(-1).nonzero().squeeze(1)
    feature, row = j % d_sae, j // d_sae  # row among the kept positions
    token = row if skip_first == 0 else row // kept_len * ctx_len + row % kept_len + skip_first
    return Firings(token, feature, flat.view(-1).take(token * d_sae + feature))


def rank_within_groups(group: Tensor, score: Tensor, score_bits: int) -> tuple[Tensor, Tensor]:
    """Order entries by (group, score) and give each its 0-based rank inside its group.

    Returns (order, rank): entry order[i] has rank rank[i]. Packs both into one int64 so a single unstable
    sort suffices (torch's stable and multi-key sorts are several times slower on CPU).
    """
    if group.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=group.device)
        return empty, empty
    if int(group.max()) >= 2 ** (63 - score_bits):
        raise ValueError("too many groups to pack with the score into one int64")
    _, order = torch.sort((group << score_bits) | score)
    sorted_group = group[order]
    starts = torch.ones_like(sorted_group, dtype=torch.bool)
    starts[1:] = sorted_group[1:] != sorted_group[:-1]
    idx = torch.arange(len(order), device=group.device)
    first = torch.cummax(torch.where(starts, idx, torch.zeros_like(idx)), dim=0).values
    return order, idx - first


class LogGrid:
    """Fixed log-spaced fine bins over (0, inf): an underflow bin, `per_decade` bins per decade, an overflow bin.

    The grid is fixed before the pass, so per-feature counts on it are exact; a feature's final histogram
    merges runs of adjacent fine bins (see `rebin`), which keeps the counts exact.
    """

    def __init__(self, lo: float, hi: float, per_decade: int):
        if not 0 < lo < hi:
            raise ValueError("histogram range needs 0 < lo < hi")
        self.log_lo = math.log10(lo)
        self.per_decade = per_decade
        n_regular = int(math.ceil((math.log10(hi) - self.log_lo) * per_decade))
        inner = 10.0 ** (self.log_lo + np.arange(n_regular + 1) / per_decade)
        self.edges = np.concatenate([[0.0], inner, [np.inf]])
        """Bin i covers [edges[i], edges[i+1])."""
        self.n_bins = len(self.edges) - 1
        self._edges_t: dict[torch.device, Tensor] = {}

    def index(self, values: Tensor) -> Tensor:
        """Fine-bin index of each positive value; exact against `edges` (log10 only gives the first guess)."""
        edges = self._edges_t.setdefault(values.device, torch.as_tensor(self.edges, device=values.device))
        v = values.double()
        guess = torch.floor((torch.log10(v) - self.log_lo) * self.per_decade).long() + 1
        idx = guess.clamp(0, self.n_bins - 1)
        idx = idx - (v < edges[idx]).long()
        idx = idx + (v >= edges[(idx + 1).clamp(max=self.n_bins)]).long()
        return idx.clamp(0, self.n_bins - 1)

    def rebin(self, counts: np.ndarray, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Merge each feature's fine counts [d_sae, n_bins] into at most n_out bins spanning its non-zero range.

        Returns (lo, hi, count), each [d_sae, n_out]; unused bins have count 0 and lo == hi == 0.
        """
        d_sae = counts.shape[0]
        nonzero = counts > 0
        has = nonzero.any(axis=1)
        first = np.where(has, nonzero.argmax(axis=1), 0)
        last = np.where(has, self.n_bins - 1 - nonzero[:, ::-1].argmax(axis=1), -1)
        span = np.maximum(last - first + 1, 0)
        width = np.maximum(-(-span // n_out), 1)  # ceil(span / n_out) fine bins per output bin
        cum = np.zeros((d_sae, self.n_bins + 1), dtype=np.int64)
        np.cumsum(counts, axis=1, out=cum[:, 1:])
        start = first[:, None] + np.arange(n_out)[None, :] * width[:, None]
        used = start <= last[:, None]
        start = np.minimum(start, self.n_bins)
        stop = np.minimum(start + width[:, None], last[:, None] + 1).clip(min=start)
        rows = np.arange(d_sae)[:, None]
        count = np.where(used, cum[rows, stop] - cum[rows, start], 0)
        lo = np.where(used, self.edges[start], 0.0)
        hi = np.where(used, self.edges[stop], 0.0)
        return lo, hi, count
