"""Match the features of two dictionaries on the same site by the cosine of their decoder directions.

Up to HUNGARIAN_MAX features a side, the matching is the optimal one-to-one assignment (Hungarian method,
scipy's linear_sum_assignment on the dense cosine matrix). Above it the dense matrix and the O(n^3)
assignment get too big, so pairs are taken greedily: every feature proposes its CANDIDATES most similar
features on the other side, and proposals are accepted best first while both features are still free.
Either way each feature also gets its best cosine to any feature of the other side, matched or not.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

HUNGARIAN_MAX = 8192
"""Largest d_sae (either side) matched with the Hungarian method; larger ones are matched greedily."""
CANDIDATES = 8
"""Partners each feature proposes in the greedy matching."""
CHUNK = 4096
"""Rows of the cosine matrix computed at a time in the greedy matching."""

Side = Literal["a", "b"]


@dataclass(frozen=True)
class Matching:
    method: str
    """'hungarian' or 'greedy'."""
    a: np.ndarray
    """[m] matched features of dictionary A, ascending."""
    b: np.ndarray
    """[m] the feature of B matched to each of them."""
    cos: np.ndarray
    """[m] decoder cosine of each matched pair."""
    best_a: np.ndarray
    """[n_a] highest decoder cosine of each A feature to any B feature."""
    best_b: np.ndarray
    """[n_b] highest decoder cosine of each B feature to any A feature."""

    @property
    def n_a(self) -> int:
        return len(self.best_a)

    @property
    def n_b(self) -> int:
        return len(self.best_b)

    def partner_cos(self, side: Side) -> np.ndarray:
        """[n] cosine of each feature of `side` to its matched partner (NaN where it has none)."""
        out = np.full(self.n_a if side == "a" else self.n_b, np.nan)
        out[self.a if side == "a" else self.b] = self.cos
        return out

    def partners(self, side: Side) -> np.ndarray:
        """[n] the matched partner of each feature of `side` (-1 where it has none)."""
        out = np.full(self.n_a if side == "a" else self.n_b, -1, dtype=np.int64)
        mine, theirs = (self.a, self.b) if side == "a" else (self.b, self.a)
        out[mine] = theirs
        return out

    def unmatched(self, side: Side, threshold: float) -> np.ndarray:
        """Features of `side` without a partner at cosine >= threshold, worst match first."""
        cos = self.partner_cos(side)
        worst_first = np.nan_to_num(cos, nan=-np.inf)
        ids = np.nonzero(~(cos >= threshold))[0]
        return ids[np.argsort(worst_first[ids], kind="stable")]


def decoder_directions(sae) -> Tensor:
    """[d_sae, d_in] unit-norm decoder rows of a dictionary (float32, on the CPU)."""
    w = sae.W_dec.detach().float().cpu()
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)


def match_directions(dirs_a: Tensor, dirs_b: Tensor, method: str = "auto") -> Matching:
    """Match unit rows of dirs_a [n_a, d] to unit rows of dirs_b [n_b, d] one to one by cosine.

    method: 'hungarian', 'greedy', or 'auto' (Hungarian up to HUNGARIAN_MAX rows a side).
    """
    if dirs_a.shape[1] != dirs_b.shape[1]:
        raise ValueError(f"decoders live in different spaces (d_in {dirs_a.shape[1]} vs {dirs_b.shape[1]})")
    if method == "auto":
        method = "hungarian" if max(len(dirs_a), len(dirs_b)) <= HUNGARIAN_MAX else "greedy"
    if method == "hungarian":
        return _hungarian(dirs_a, dirs_b)
    if method == "greedy":
        return _greedy(dirs_a, dirs_b)
    raise ValueError(f"unknown matching method {method!r} (hungarian, greedy or auto)")


def compare_dictionaries(sae_a, sae_b, method: str = "auto") -> Matching:
    """Match the features of two dictionaries that read the same activations (same d_in)."""
    if sae_a.cfg.d_in != sae_b.cfg.d_in:
        raise ValueError(f"the dictionaries read different activations (d_in {sae_a.cfg.d_in} vs "
                         f"{sae_b.cfg.d_in}); compare dictionaries on the same site")
    return match_directions(decoder_directions(sae_a), decoder_directions(sae_b), method)


def _hungarian(dirs_a: Tensor, dirs_b: Tensor) -> Matching:
    cos = (dirs_a @ dirs_b.T).numpy()  # (n_a, n_b)
    rows, cols = linear_sum_assignment(cos, maximize=True)
    return Matching("hungarian", rows, cols, cos[rows, cols].astype(np.float64),
                    cos.max(axis=1).astype(np.float64), cos.max(axis=0).astype(np.float64))


def _greedy(dirs_a: Tensor, dirs_b: Tensor, candidates: int = CANDIDATES, chunk: int = CHUNK) -> Matching:
    n_a, n_b = len(dirs_a), len(dirs_b)
    m_a, m_b = min(candidates, n_b), min(candidates, n_a)
    # proposals of A rows, and the running top-m of every B column, from row chunks of the cosine matrix
    prop_a_cos, prop_a_ids = [], []
    top_b_cos = torch.full((m_b, n_b), -torch.inf)
    top_b_ids = torch.full((m_b, n_b), -1, dtype=torch.long)
    for start in range(0, n_a, chunk):
        cos = dirs_a[start:start + chunk] @ dirs_b.T  # (c, n_b)
        values, ids = cos.topk(m_a, dim=1)
        prop_a_cos.append(values)
        prop_a_ids.append(ids)
        col_values, col_rows = cos.topk(min(m_b, len(cos)), dim=0)  # (<=m_b, n_b)
        merged = torch.cat([top_b_cos, col_values])
        merged_ids = torch.cat([top_b_ids, col_rows + start])
        top_b_cos, order = merged.topk(m_b, dim=0)
        top_b_ids = merged_ids.gather(0, order)
    a_cos, a_ids = torch.cat(prop_a_cos), torch.cat(prop_a_ids)  # (n_a, m_a)
    pair_a = torch.cat([torch.arange(n_a).repeat_interleave(m_a), top_b_ids.T.reshape(-1)])
    pair_b = torch.cat([a_ids.reshape(-1), torch.arange(n_b).repeat_interleave(m_b)])
    pair_cos = torch.cat([a_cos.reshape(-1), top_b_cos.T.reshape(-1)])
    a, b, cos = _accept_best_first(pair_a.numpy(), pair_b.numpy(), pair_cos.numpy(), n_a, n_b)
    return Matching("greedy", a, b, cos, a_cos[:, 0].double().numpy(), top_b_cos[0].double().numpy())


def _accept_best_first(pair_a: np.ndarray, pair_b: np.ndarray, pair_cos: np.ndarray, n_a: int,
                       n_b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    free_a, free_b = np.ones(n_a, bool), np.ones(n_b, bool)
    taken = []
    for i in np.argsort(-pair_cos, kind="stable"):
        ia, ib = pair_a[i], pair_b[i]
        if free_a[ia] and free_b[ib]:
            free_a[ia] = free_b[ib] = False
            taken.append(i)
    taken = np.asarray(taken, dtype=np.int64)
    order = np.argsort(pair_a[taken], kind="stable")
    taken = taken[order]
    return pair_a[taken].astype(np.int64), pair_b[taken].astype(np.int64), pair_cos[taken].astype(np.float64)
