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

from typing import NamedTuple

import torch
from torch import Tensor

STOP_REASONS = ("max_steps", "threshold", "repeat", "no_positive")
"""stop_reason codes: ran all steps; residual norm fell below the threshold; the chosen atom was already
chosen (its step is applied, as in SAELens); no atom has a positive correlation left."""

CHUNK_ROWS = 256
"""Rows per chunk of the selection loop: [256, d_sae] correlations stay in L2/L3 on CPUs (measured best)."""

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
    if W.shape[0] ** 2 * W.element_size() > GRAM_MAX_BYTES:
        return None
    with torch.no_grad():
        return W @ W.T


@torch.no_grad()
def pursue(sae_in: Tensor, W: Tensor, G: Tensor | None, steps: int, threshold: float = 0.0,
           stop_on_repeat: bool = False) -> Pursuit:
    """Select atoms for centred inputs sae_in [N, d_in]: `steps` steps, or fewer in adaptive mode.

    threshold > 0 stops an input once its residual norm falls below it; stop_on_repeat stops it once an
    atom is chosen a second time or no correlation is positive (SAELens' stop_on_duplicate_support).
    """
    n = sae_in.shape[0]
    ids = torch.full((n, steps), -1, dtype=torch.long, device=sae_in.device)
    coeffs = torch.zeros(n, steps, dtype=sae_in.dtype, device=sae_in.device)
    n_steps = torch.full((n,), steps, dtype=torch.long, device=sae_in.device)
    reason = torch.zeros(n, dtype=torch.long, device=sae_in.device)
    for start in range(0, n, CHUNK_ROWS):
        rows = torch.arange(start, min(n, start + CHUNK_ROWS), device=sae_in.device)
        _pursue_chunk(sae_in[rows], W, G, rows, Pursuit(ids, coeffs, n_steps, reason), threshold,
                      stop_on_repeat)
    return Pursuit(ids, coeffs, n_steps, reason)


def _pursue_chunk(r: Tensor, W: Tensor, G: Tensor | None, rows: Tensor, out: Pursuit, threshold: float,
                  stop_on_repeat: bool) -> None:
    r = r.clone()
    c = _padded_correlations(r, W)  # [B, d_sae padded to a multiple of _BLOCK], pads are -inf
    m = W.shape[0]
    for t in range(out.atom_ids.shape[1]):
        j, c_max = _block_argmax(c)
        w = W[j]  # [B, d_in]
        a = torch.linalg.vecdot(r, w).relu_()
        a[c_max <= 0] = 0  # SAELens' relu(c).max() picks a zero: nothing is added
        repeat = (out.atom_ids[rows, :t] == j[:, None]).any(dim=1) if stop_on_repeat else None
        r.addcmul_(w, a[:, None], value=-1)
        if G is None:
            c[:, :m] = r @ W.T
        else:
            c[:, :m].addcmul_(G[j], a[:, None], value=-1)
        added = a > 0
        out.atom_ids[rows, t] = torch.where(added, j, -1)
        out.coeffs[rows, t] = a
        done = _stopped(r, added, repeat, threshold, stop_on_repeat, out, rows, t)
        if done is not None and done.any():
            keep = ~done
            r, c, rows = r[keep], c[keep], rows[keep]
            if rows.numel() == 0:
                return


def _stopped(r: Tensor, added: Tensor, repeat: Tensor | None, threshold: float, stop_on_repeat: bool,
             out: Pursuit, rows: Tensor, t: int) -> Tensor | None:
    """Record the inputs that stop after step t; None in fixed-k mode."""
    if threshold <= 0 and not stop_on_repeat:
        return None
    below = r.norm(dim=-1) < threshold if threshold > 0 else torch.zeros_like(added)
    if stop_on_repeat:
        no_positive, repeat = ~added, repeat & added
    else:
        no_positive = repeat = torch.zeros_like(added)
    done = below | repeat | no_positive
    reason = torch.where(below, 1, torch.where(repeat, 2, 3))
    out.n_steps[rows[done]] = t + 1
    out.stop_reason[rows[done]] = reason[done]
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
    blocks = c.view(b, width // _BLOCK, _BLOCK)
    block_max = blocks.amax(dim=2)  # [B, n_blocks]
    best, block = block_max.max(dim=1)
    within = blocks[torch.arange(b, device=c.device), block].argmax(dim=1)
    return block * _BLOCK + within, best


def rederive(sae_in: Tensor, W: Tensor, atom_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Differentiable coefficients [N, S] and final residual [N, d_in] for fixed atom choices.

    The same recurrence as the unrolled loop (a = relu(r . W[j]), r <- r - a W[j]), so autograd gives the
    gradients of the unrolled loop; steps with atom -1 add nothing.
    """
    r = sae_in
    coeffs = []
    for t in range(atom_ids.shape[1]):
        j = atom_ids[:, t]
        used = j >= 0
        w = W[j.clamp(min=0)]
        a = torch.linalg.vecdot(r, w).relu() * used
        r = r - a[:, None] * w
        coeffs.append(a)
    return torch.stack(coeffs, dim=1), r


def scatter_codes(atom_ids: Tensor, coeffs: Tensor, d_sae: int) -> Tensor:
    """[N, d_sae] feature activations: each atom's coefficients summed over the steps that chose it."""
    acts = torch.zeros(atom_ids.shape[0], d_sae, dtype=coeffs.dtype, device=coeffs.device)
    return acts.scatter_add(1, atom_ids.clamp(min=0), coeffs * (atom_ids >= 0))
