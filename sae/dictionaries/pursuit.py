"""Matching pursuit over a tied, unit-norm dictionary W [d_sae, d_in], fast.

The textbook loop (and SAELens' `_encode_matching_pursuit`) recomputes the correlations r W^T at every step:
k big matmuls. Here they are computed once, c = r0 W^T, and updated with the Gram matrix G = W W^T:
after choosing atom j with coefficient a, r <- r - a W[j] means c <- c - a G[j] (a row gather and an axpy).
The selection runs without autograd in row chunks that stay in cache; the coefficients are then re-derived
differentiably (`rederive`) with the exact residual recurrence SAELens backpropagates through, so gradients
match the unrolled loop. Coefficients are always computed from the exact residual, a = relu(r . W[j]); only
the argmax uses the updated correlations, so the two loops pick different atoms only at floating-point
near-ties.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import torch
from torch import Tensor

from sae.dictionaries.sparse_ops import full_precision

STOP_REASONS = ("max_steps", "threshold", "repeat", "no_positive")
"""stop_reason codes: ran all steps; residual norm fell below the threshold; the chosen atom was already
chosen (its step is applied, as in SAELens); no atom has a positive correlation left."""

CHUNK_ROWS = 1024
"""Rows per chunk of the selection loop on CPU: [1024, d_sae] correlations (19 MB) stay in L3, and the
steps are big enough that two threads share them well (256 is as fast on one idle core, much slower on
a busy machine)."""
GPU_CHUNK_ROWS = 16384
"""On GPUs the loop runs over big chunks: per-kernel work, not cache, is what matters there."""

GRAM_MAX_BYTES = 2 << 30
"""Above this size of G the encoder recomputes r W^T per step instead (O(d_sae^2) memory)."""

_BLOCK = 64


class Pursuit(NamedTuple):
    atom_ids: Tensor
    """[N, S] atom chosen at each step, -1 where the step added nothing (coefficient 0 or stopped)."""
    coeffs: Tensor
    """[N, S] coefficient added at each step (0 where atom_ids is -1)."""
    n_steps: Tensor
    """[N] steps taken (S in fixed-k mode)."""
    stop_reason: Tensor
    """[N] index into STOP_REASONS."""


def gram(W: Tensor) -> Tensor | None:
    """G = W W^T, or None when it would exceed GRAM_MAX_BYTES."""
    if W.shape[0] ** 2 * 4 > GRAM_MAX_BYTES:
        return None
    with torch.no_grad(), full_precision(W.device):
        return W.float() @ W.float().T


@torch.no_grad()
def pursue(sae_in: Tensor, W: Tensor, G: Tensor | None, steps: int, threshold: float = 0.0,
           stop_on_repeat: bool = False) -> Pursuit:
    """Select atoms for centred inputs sae_in [N, d_in]: `steps` steps, or fewer in adaptive mode.

    threshold > 0 stops an input once its residual norm falls below it; stop_on_repeat stops it once an
    atom is chosen a second time or no correlation is positive (SAELens' stop_on_duplicate_support).
    """
    n, workers = sae_in.shape[0], torch.get_num_threads() if sae_in.device.type == "cpu" else 1
    if n == 0:
        return _empty(sae_in, steps)
    rows = min(CHUNK_ROWS, -(-n // workers)) if sae_in.device.type == "cpu" else GPU_CHUNK_ROWS
    W = W.float()

    def run(start: int) -> Pursuit:
        with torch.no_grad(), full_precision(sae_in.device):
            return _pursue_chunk(sae_in[start:start + rows].float(), W, G, steps, threshold, stop_on_repeat)

    chunks = _map_chunks(run, range(0, n, rows), workers)
    return Pursuit(*(torch.cat(parts) for parts in zip(*chunks)))


def _map_chunks(run, starts: range, workers: int) -> list[Pursuit]:
    """Run the chunks on `workers` threads, each with one intra-op thread.

    The per-step ops are memory-bound and short; splitting each of them over OpenMP threads costs a
    synchronisation per op, which on a busy machine made two threads 5x slower than one. Whole chunks on
    separate threads need none (torch ops release the GIL).
    """
    if workers <= 1 or len(starts) <= 1:
        return [run(start) for start in starts]

    def single_threaded(start: int) -> Pursuit:
        torch.set_num_threads(1)  # this pool thread's OpenMP / MKL team only
        return run(start)

    try:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(single_threaded, starts))
    finally:
        torch.set_num_threads(workers)  # threads created later start from the last value set


def _empty(sae_in: Tensor, steps: int) -> Pursuit:
    long = dict(dtype=torch.long, device=sae_in.device)
    return Pursuit(torch.zeros(0, steps, **long), sae_in.new_zeros(0, steps), torch.zeros(0, **long),
                   torch.zeros(0, **long))


def _pursue_chunk(x: Tensor, W: Tensor, G: Tensor | None, steps: int, threshold: float,
                  stop_on_repeat: bool) -> Pursuit:
    b, m = x.shape[0], W.shape[0]
    adaptive = threshold > 0 or stop_on_repeat
    ids = torch.zeros(b, steps, dtype=torch.long, device=x.device)
    coeffs = x.new_zeros(b, steps)
    n_steps = torch.full((b,), steps, dtype=torch.long, device=x.device)
    reason = torch.zeros(b, dtype=torch.long, device=x.device)
    live = torch.arange(b, device=x.device)  # rows still running (adaptive mode drops finished ones)
    r = x.clone()
    c = _padded_correlations(r, W)  # [B, d_sae padded to a multiple of _BLOCK], pads are -inf
    gathered = x.new_empty(b, m) if x.device.type != "cpu" or c.shape[1] != m else None  # G[j] rows
    for t in range(steps):
        j, c_max = _block_argmax(c)
        w = W.index_select(0, j)  # [B, d_in]; index_select copies whole rows, much faster than W[j]
        a = torch.linalg.vecdot(r, w).relu_().masked_fill_(c_max <= 0, 0)  # SAELens: relu(c).max() = 0 adds 0
        r.addcmul_(w, a[:, None], value=-1)
        if G is None:
            c[:, :m] = r @ W.T
        else:
            _subtract_gram_rows(c, G, j, a, gathered)
        if not adaptive:
            ids[:, t], coeffs[:, t] = j, a
            continue
        repeat = (ids[live, :t] == j[:, None]).any(dim=1) & (a > 0)
        ids[live, t], coeffs[live, t] = j, a
        done = _stopped(r, a, repeat, threshold, stop_on_repeat, t, n_steps, reason, live)
        if done.any():
            keep = ~done
            r, c, live = r[keep], c[keep], live[keep]
            if live.numel() == 0:
                break
    ids[coeffs <= 0] = -1
    return Pursuit(ids, coeffs, n_steps, reason)


def _subtract_gram_rows(c: Tensor, G: Tensor, j: Tensor, a: Tensor, gathered: Tensor | None) -> None:
    """c[b, :m] -= a[b] * G[j[b]] in place."""
    b, m = j.shape[0], G.shape[0]
    if gathered is None:
        # On CPU a sparse [B, d_sae] matrix with one entry per row, multiplied into c in place, reads each G
        # row once and never materialises G[j]: ~35% faster than index_select + addcmul.
        select = torch.sparse_coo_tensor(torch.stack([torch.arange(b, device=j.device), j]), a, (b, m),
                                         is_coalesced=True, check_invariants=False)
        torch.addmm(c, select, G, alpha=-1, out=c)
        return
    rows = gathered[:b]
    torch.index_select(G, 0, j, out=rows)
    c[:, :m].addcmul_(rows, a[:, None], value=-1)


def _stopped(r: Tensor, a: Tensor, repeat: Tensor, threshold: float, stop_on_repeat: bool, t: int,
             n_steps: Tensor, reason: Tensor, live: Tensor) -> Tensor:
    """Mark the live rows that stop after step t (n_steps, reason) and return that mask."""
    below = r.norm(dim=-1) < threshold if threshold > 0 else torch.zeros_like(repeat)
    no_positive = a <= 0 if stop_on_repeat else torch.zeros_like(repeat)
    repeat = repeat if stop_on_repeat else torch.zeros_like(repeat)
    done = below | repeat | no_positive
    stopped = live[done]
    n_steps[stopped] = t + 1
    reason[stopped] = torch.where(below, 1, torch.where(repeat, 2, 3))[done]
    return done


def _padded_correlations(r: Tensor, W: Tensor) -> Tensor:
    m = W.shape[0]
    width = -(-m // _BLOCK) * _BLOCK
    if width == m:
        return r @ W.T
    c = torch.full((r.shape[0], width), float("-inf"), dtype=r.dtype, device=r.device)
    c[:, :m] = r @ W.T
    return c


def _block_argmax(c: Tensor) -> tuple[Tensor, Tensor]:
    """Row argmax (first maximum, like torch.max) and max of c [B, width]; width a multiple of _BLOCK.

    torch's argmax over a long row is not vectorised on CPU (~17x slower than amax); a vectorised amax over
    blocks, then two short argmaxes, gives the same index.
    """
    b, width = c.shape
    n_blocks = width // _BLOCK
    block_max = c.view(b, n_blocks, _BLOCK).amax(dim=2)  # [B, n_blocks]
    best, block = block_max.max(dim=1)
    flat_block = torch.arange(b, device=c.device) * n_blocks + block
    within = c.view(b * n_blocks, _BLOCK).index_select(0, flat_block).argmax(dim=1)
    return block * _BLOCK + within, best


def rederive(sae_in: Tensor, W: Tensor, atom_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Differentiable coefficients [N, S] and final residual [N, d_in] for fixed atom choices.

    The same recurrence as the unrolled loop (a = relu(r . W[j]), r <- r - a W[j]), so autograd gives the
    gradients of the unrolled loop; steps with atom -1 add nothing.
    """
    with full_precision(sae_in.device):
        r, coeffs = sae_in.float(), []
        for t in range(atom_ids.shape[1]):
            j = atom_ids[:, t]
            w = W.index_select(0, j.clamp(min=0)).float()
            a = torch.linalg.vecdot(r, w).relu() * (j >= 0)
            r = r - a[:, None] * w
            coeffs.append(a)
        return torch.stack(coeffs, dim=1), r


def scatter_codes(atom_ids: Tensor, coeffs: Tensor, d_sae: int) -> Tensor:
    """[N, d_sae] feature activations: each atom's coefficients summed over the steps that chose it."""
    acts = torch.zeros(atom_ids.shape[0], d_sae, dtype=coeffs.dtype, device=coeffs.device)
    return acts.scatter_add(1, atom_ids.clamp(min=0), coeffs * (atom_ids >= 0))
