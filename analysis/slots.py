"""A fixed-size table of stored examples per group, merged with each batch's candidates on the device.

Both the exact top-N per feature and the per-(feature, band) samples are "keep the `cap` entries with the
smallest int64 score in each group"; only the score differs (descending activation, or a hash key).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from analysis.streaming import INT64_MAX, rank_within_groups


@dataclass
class Candidates:
    """Entries offered to a SlotTable (one per firing), all [M]."""

    group: Tensor
    """Group (row of the table) of each entry."""
    score: Tensor
    """int64, smaller is better; must stay below 2**score_bits."""
    value: Tensor
    """Activation of the feature at the entry."""
    context_id: Tensor
    position: Tensor
    windows: Callable[[Tensor], tuple[Tensor, Tensor]]
    """Given entry indices [m], returns (window_start [m], window activations [m, W]); called for winners only,
    so the activations around a firing are gathered only when the firing is kept."""


class SlotTable:
    """Per group, the `cap` entries with the smallest score seen so far, sorted by score (best first).

    Memory: n_groups * cap * (4 * W + 28) bytes, fixed at construction.
    """

    def __init__(self, n_groups: int, cap: int, window: int, score_bits: int, device: str | torch.device):
        self.n_groups, self.cap, self.score_bits = n_groups, cap, score_bits
        shape = (n_groups, cap)
        self.score = torch.full(shape, INT64_MAX, dtype=torch.long, device=device)
        self.value = torch.zeros(shape, dtype=torch.float32, device=device)
        self.context_id = torch.full(shape, -1, dtype=torch.long, device=device)
        self.position = torch.full(shape, -1, dtype=torch.int32, device=device)
        self.window_start = torch.zeros(shape, dtype=torch.int32, device=device)
        self.window = torch.full((*shape, window), float("nan"), dtype=torch.float32, device=device)

    def worst(self) -> Tensor:
        """Score a candidate must beat to enter each group [n_groups] (INT64_MAX while a group has room)."""
        return self.score[:, -1]

    def clear(self, groups: Tensor) -> None:
        self.score[groups] = INT64_MAX
        self.value[groups] = 0.0
        self.context_id[groups] = -1
        self.position[groups] = -1
        self.window_start[groups] = 0
        self.window[groups] = float("nan")

    def take(self, groups: Tensor) -> tuple[Candidates, Tensor]:
        """The stored entries of `groups` as Candidates (windows served from a copy), and their group ids."""
        valid = self.score[groups] < INT64_MAX  # [g, cap]
        rows = groups[:, None].expand_as(valid)[valid]
        windows = self.window[groups][valid]
        starts = self.window_start[groups][valid]
        cands = Candidates(
            group=rows, score=self.score[groups][valid], value=self.value[groups][valid],
            context_id=self.context_id[groups][valid], position=self.position[groups][valid],
            windows=lambda idx: (starts[idx], windows[idx]))
        return cands, rows

    def merge(self, c: Candidates) -> tuple[Tensor, Tensor]:
        """Insert candidates, keeping the best `cap` per group.

        Returns (groups touched [g], score of the best entry that did not fit [g], INT64_MAX if all fit):
        the reservoir threshold of a bottom-k sample.
        """
        cap = self.cap
        order, rank = rank_within_groups(c.group, c.score, self.score_bits)
        keep = rank <= cap  # cap + 1 per group: the extra one tells the caller the threshold
        order, rank = order[keep], rank[keep]
        if order.numel() == 0:
            empty = torch.zeros(0, dtype=torch.long, device=self.score.device)
            return empty, empty
        groups, row = torch.unique_consecutive(c.group[order], return_inverse=True)
        n = len(groups)
        cand_score = torch.full((n, cap + 1), INT64_MAX, dtype=torch.long, device=self.score.device)
        cand_src = torch.full((n, cap + 1), -1, dtype=torch.long, device=self.score.device)
        cand_score[row, rank] = c.score[order]
        cand_src[row, rank] = order
        best, pos = torch.topk(torch.cat([self.score[groups], cand_score], dim=1), cap + 1,
                               dim=1, largest=False, sorted=True)  # [n, cap + 1]
        kth = best[:, cap]
        best, pos = best[:, :cap], pos[:, :cap]
        from_cand = (pos >= cap) & (best < INT64_MAX)  # an empty slot copies an empty stored slot
        src = torch.where(from_cand, cand_src.gather(1, (pos - cap).clamp(min=0)), 0)
        old = pos.clamp(max=cap - 1)
        self._write(groups, best, old, from_cand, src, c)
        return groups, kth

    def _write(self, groups: Tensor, best: Tensor, old: Tensor, from_cand: Tensor, src: Tensor,
               c: Candidates) -> None:
        """Fill the rows of `groups`: slot j comes from stored slot old[:, j] or candidate src[:, j]."""
        def pick(stored: Tensor, new: Tensor) -> Tensor:
            return torch.where(from_cand, new[src].to(stored.dtype), stored[groups].gather(1, old))

        value = pick(self.value, c.value)
        context_id = pick(self.context_id, c.context_id)
        position = pick(self.position, c.position)
        start = self.window_start[groups].gather(1, old)
        window = self.window[groups].gather(1, old[..., None].expand(-1, -1, self.window.shape[-1]))
        if bool(from_cand.any()):
            new_start, new_window = c.windows(src[from_cand])
            start[from_cand] = new_start.to(start.dtype)
            window[from_cand] = new_window.to(window.dtype)
        self.score[groups] = best
        self.value[groups] = value
        self.context_id[groups] = context_id
        self.position[groups] = position
        self.window_start[groups] = start
        self.window[groups] = window
