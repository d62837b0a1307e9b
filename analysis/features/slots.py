"""A fixed-size table of stored examples per group, merged with each batch's candidates on the device.

Both the exact top-N per feature and the per-(feature, band) samples are "keep the `cap` entries with the
smallest int64 score in each group"; only the score differs (descending activation, or a hash key).

Slots within a group are unordered: a new winner takes the slot of the entry it evicts, so stored data
(above all the activation windows) is written once and never moved; `ordered` sorts at the end.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from analysis.features.streaming import INT64_MAX, rank_within_groups


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
    """Per group, the `cap` entries with the smallest score seen so far.

    Memory: n_groups * cap * (bytes per window value * W + 32) bytes, fixed at construction.
    """

    def __init__(self, n_groups: int, cap: int, window: int, score_bits: int, device: str | torch.device,
                 window_dtype: torch.dtype = torch.float32):
        self.n_groups, self.cap, self.score_bits = n_groups, cap, score_bits
        shape = (n_groups, cap)
        self.score = torch.full(shape, INT64_MAX, dtype=torch.long, device=device)
        self.worst = torch.full((n_groups,), INT64_MAX, dtype=torch.long, device=device)
        """Score a candidate must beat to enter each group (INT64_MAX while a group has room)."""
        self.value = torch.zeros(shape, dtype=torch.float32, device=device)
        self.context_id = torch.full(shape, -1, dtype=torch.long, device=device)
        self.position = torch.full(shape, -1, dtype=torch.int32, device=device)
        self.window_start = torch.zeros(shape, dtype=torch.int32, device=device)
        self.window = torch.full((*shape, window), float("nan"), dtype=window_dtype, device=device)

    def extract(self, flat_slots: Tensor, groups: Tensor) -> Candidates:
        """Copy out the entries in `flat_slots` (group * cap + slot) as candidates for `groups`, then empty them."""
        window = self.window.view(-1, self.window.shape[-1])[flat_slots]
        start = self.window_start.view(-1)[flat_slots]
        cands = Candidates(group=groups, score=self.score.view(-1)[flat_slots],
                           value=self.value.view(-1)[flat_slots],
                           context_id=self.context_id.view(-1)[flat_slots],
                           position=self.position.view(-1)[flat_slots],
                           windows=lambda idx: (start[idx], window[idx]))
        self.clear(flat_slots)
        return cands

    def clear(self, flat_slots: Tensor) -> None:
        """Empty slots (group * cap + slot); call `refresh_worst` for their groups afterwards."""
        self.score.view(-1)[flat_slots] = INT64_MAX
        self.value.view(-1)[flat_slots] = 0.0
        self.context_id.view(-1)[flat_slots] = -1
        self.position.view(-1)[flat_slots] = -1

    def refresh_worst(self, groups: Tensor) -> None:
        self.worst[groups] = self.score[groups].max(dim=1).values

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
        stored = self.score[groups]
        best, pos = torch.topk(torch.cat([stored, cand_score], dim=1), cap + 1,
                               dim=1, largest=False, sorted=True)  # [n, cap + 1]
        kth = best[:, cap]
        best, pos = best[:, :cap], pos[:, :cap]
        self.worst[groups] = best[:, cap - 1]
        real = best < INT64_MAX
        kept = torch.zeros_like(stored, dtype=torch.bool)
        r, j = (real & (pos < cap)).nonzero(as_tuple=True)
        kept[r, pos[r, j]] = True
        is_new = real & (pos >= cap)
        src = cand_src.gather(1, (pos - cap).clamp(min=0))[is_new]
        slot = _free_slots_for(~kept, is_new)  # [n_new] slot each new winner takes
        new_rows = torch.arange(n, device=groups.device)[:, None].expand_as(is_new)[is_new]
        flat = groups[new_rows] * cap + slot
        evicted = (~kept & (stored < INT64_MAX)).nonzero(as_tuple=True)
        self.clear(groups[evicted[0]] * cap + evicted[1])  # evicted and not refilled below: emptied
        self._write(flat, src, c)
        return groups, kth

    def _write(self, flat: Tensor, src: Tensor, c: Candidates) -> None:
        if flat.numel() == 0:
            return
        start, window = c.windows(src)
        self.score.view(-1)[flat] = c.score[src]
        self.value.view(-1)[flat] = c.value[src].to(self.value.dtype)
        self.context_id.view(-1)[flat] = c.context_id[src].to(self.context_id.dtype)
        self.position.view(-1)[flat] = c.position[src].to(self.position.dtype)
        self.window_start.view(-1)[flat] = start.to(self.window_start.dtype)
        self.window.view(-1, self.window.shape[-1])[flat] = window.to(self.window.dtype)

    def ordered(self) -> dict[str, Tensor]:
        """All fields with each group's slots sorted by score (best first, empty slots last)."""
        order = torch.argsort(self.score, dim=1)
        out = {name: getattr(self, name).gather(1, order)
               for name in ("score", "value", "context_id", "position", "window_start")}
        out["window"] = self.window.gather(1, order[..., None].expand_as(self.window))
        return out


def _free_slots_for(free: Tensor, is_new: Tensor) -> Tensor:
    """Pair the i-th new winner of each row with the i-th free slot of that row ([n, cap] masks)."""
    free_rank = torch.cumsum(free.long(), dim=1) - 1
    slot_of_rank = torch.zeros_like(free_rank)
    rows, slots = free.nonzero(as_tuple=True)
    slot_of_rank[rows, free_rank[rows, slots]] = slots
    new_rank = torch.cumsum(is_new.long(), dim=1) - 1
    return slot_of_rank.gather(1, new_rank.clamp(min=0))[is_new]
