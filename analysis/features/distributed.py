"""`torchrun ... analyze`: each rank reads a contiguous share of the contexts; the accumulators are merged into
rank 0, which finishes the statistics and writes the store alone.

Every merge gives what one process gets:
- counts, histograms, token counts and MP step counts are integer sums, the max a max;
- activation sums are float64 sums (equal up to the order of the additions);
- the firing logs are gathered whole, in rank order (= corpus order, as the shares are contiguous), so everything
  drawn from them at the end (top examples, band samples, windows, co-occurrence) is what one process draws;
- MP parent pairs: dense counts are summed; sparse ones gathered and summed, then pruned as one process would.
Collectives run on the rank's device (NCCL needs CUDA tensors; gloo takes CPU ones).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from analysis.features.firing_log import FiringLog, LogArrays
from analysis.features.pursuit import MPStepAccumulator
from analysis.features.stats import FeatureStatsAccumulator

GATHER_ROWS = 4_000_000
"""Most log entries a rank sends in one gather (64 MB on the wire per rank)."""


def share(n: int, rank: int, world: int, batch: int) -> range:
    """The contiguous share of n contexts that `rank` reads: whole batches of `batch`, so every batch holds the
    contexts it holds in one process (a matmul's rows can round differently in a batch of another shape)."""
    n_batches = -(-n // batch)
    return range(min(n, n_batches * rank // world * batch), min(n, n_batches * (rank + 1) // world * batch))


def collective_device(fallback: torch.device) -> torch.device:
    """Where collective tensors must live: the rank's CUDA device under NCCL, the CPU under gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu") if fallback.type != "cpu" else fallback


def merge_into_rank0(stats: FeatureStatsAccumulator, mp: MPStepAccumulator | None, heads=None) -> None:
    """Fold every rank's accumulators into rank 0's (the other ranks' are left partial); heads: the
    HeadShareAccumulator of a hook_z dictionary (its float64 sums are summed)."""
    device = collective_device(stats.device)
    for tensor, op in ((stats.count, dist.ReduceOp.SUM), (stats.total, dist.ReduceOp.SUM),
                       (stats.hist, dist.ReduceOp.SUM), (stats.max, dist.ReduceOp.MAX)):
        _reduce(tensor, op, device)
    n_tokens = torch.tensor([stats.n_tokens], dtype=torch.long, device=device)
    dist.reduce(n_tokens, dst=0)
    stats.n_tokens = int(n_tokens)
    for log in (stats.log, stats.edge_log):
        _gather_log(log, device)
    if mp is not None:
        _merge_mp(mp, device)
    if heads is not None:
        _reduce(heads.total, dist.ReduceOp.SUM, device)


def _reduce(tensor: torch.Tensor, op, device: torch.device) -> None:
    moved = tensor.to(device)
    dist.reduce(moved, dst=0, op=op)
    if dist.get_rank() == 0:
        tensor.copy_(moved)


def gather_rows(rows: torch.Tensor, device: torch.device) -> list[torch.Tensor] | None:
    """Every rank's int64 rows [m_r, c] on rank 0 (rank order; None elsewhere), GATHER_ROWS at a time."""
    rank, world = dist.get_rank(), dist.get_world_size()
    size = torch.tensor([rows.shape[0]], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    parts: list[list[torch.Tensor]] = [[] for _ in range(world)]
    for lo in range(0, max(sizes), GATHER_ROWS):
        width = min(GATHER_ROWS, max(sizes) - lo)  # every rank sends the same shape (gather needs it)
        mine = torch.zeros((width, rows.shape[1]), dtype=torch.long, device=device)
        piece = rows[lo:lo + width]
        mine[:len(piece)] = piece.to(device)
        bucket = [torch.empty_like(mine) for _ in range(world)] if rank == 0 else None
        dist.gather(mine, bucket, dst=0)
        if rank == 0:
            for r in range(world):
                parts[r].append(bucket[r][:max(0, min(width, sizes[r] - lo))].cpu())
    if rank != 0:
        return None
    return [torch.cat(p) if p else torch.zeros((0, rows.shape[1]), dtype=torch.long) for p in parts]


def _gather_log(log: FiringLog, device: torch.device) -> None:
    """Rank 0's log becomes every rank's entries, in rank order."""
    arr = log.arrays()
    packed = np.stack([arr.token, (arr.feature.astype(np.int64) << 32) | arr.value.view(np.uint32)], axis=1)
    gathered = gather_rows(torch.from_numpy(packed), device)
    if gathered is None:
        return
    for part in gathered[1:]:  # rank 0's own entries are already in its log
        p = part.numpy()
        log.extend(LogArrays(p[:, 0].copy(), (p[:, 1] >> 32).astype(np.int32),
                             (p[:, 1] & 0xFFFFFFFF).astype(np.uint32).view(np.float32)))


def _merge_mp(mp: MPStepAccumulator, device: torch.device) -> None:
    _reduce(mp.steps, dist.ReduceOp.SUM, device)
    exact = torch.tensor([int(mp.exact)], device=device)
    dist.reduce(exact, dst=0, op=dist.ReduceOp.MIN)
    if mp.dense:
        _reduce(mp.pairs, dist.ReduceOp.SUM, device)
        return
    gathered = gather_rows(torch.stack([mp.keys, mp.counts], dim=1).cpu(), device)
    if gathered is not None:
        mp.exact = bool(exact)
        for part in gathered[1:]:
            mp.add_counts(part[:, 0].to(mp.device), part[:, 1].to(mp.device))
