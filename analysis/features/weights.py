"""Statistics of a dictionary's weights alone: direct logit effects and nearest decoder directions.

Both are blocked over features so the largest temporary is [block, vocab] or [block, block]. At 65,536 features
and d_in = 576 they cost matmuls of 3.7 (logits, vocab 49,152) and 4.9 TFLOP (cosines): the cosine matrix is
symmetric, so each tile is multiplied once and read for both of its row blocks, which halves the second; and
their top-k selections over 3.2G and 4.3G entries go through `top_k`, which reads each entry once.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

DirectionMap = Callable[[Tensor], Tensor]
"""Maps decoder directions [n, d_in] to what the unembedding sees [n, d_in]."""


def final_norm_map(model) -> DirectionMap | None:
    """The linear part of a TransformerLens model's final norm, to apply to decoder directions.

    A decoder direction is not an activation, so the norm's data-dependent scale (1 / rms or 1 / std of the
    whole residual) is undefined for it; only the parts that act on every direction alike are kept:
    RMSNorm -> multiply by the learned weight; LayerNorm -> centre, then multiply by the weight; the bias is
    an offset shared by all features and is dropped. Pre-folded norms (LNPre/RMSPre) keep only the centring.
    """
    norm_type = getattr(model.cfg, "normalization_type", None)
    weight = getattr(getattr(model, "ln_final", None), "w", None)
    centre = norm_type in ("LN", "LNPre")
    if weight is None and not centre:
        return None
    weight = weight.detach() if weight is not None else None

    def apply(directions: Tensor) -> Tensor:
        if centre:
            directions = directions - directions.mean(dim=-1, keepdim=True)
        return directions * weight.to(directions) if weight is not None else directions

    return apply


GROUPS = 32
"""Entries per group in `top_k`."""


def top_k(x: Tensor, k: int, dim: int = 1, largest: bool = True) -> tuple[Tensor, Tensor]:
    """torch.topk(x, k, dim) of a contiguous 2-D x: the same values, and the same ids up to the order of equal
    values, several times faster on wide rows (or columns).

    The entries of each row are split into groups of GROUPS (strided: b, b + span, ...); a row's k best entries lie
    in its k groups with the best maxima (any other group has k group maxima at least as good above it), so after
    one vectorised max over the groups only k * GROUPS entries are searched.
    """
    n = x.shape[dim]
    span = n // GROUPS
    if span < 4 * k:
        return torch.topk(x, k, dim=dim, largest=largest)
    whole = span * GROUPS
    groups = x[:, :whole].view(x.shape[0], GROUPS, span) if dim == 1 else x[:whole].view(GROUPS, span, x.shape[1])
    reduce = 1 if dim == 1 else 0
    best = groups.amax(reduce) if largest else groups.amin(reduce)  # [rows, span] or [span, cols]
    chosen = torch.topk(best, k, dim=dim, largest=largest).indices
    offsets = span * torch.arange(GROUPS, device=x.device)
    tail = torch.arange(whole, n, device=x.device)
    if dim == 1:
        idx = torch.cat([(chosen[:, None, :] + offsets[None, :, None]).reshape(x.shape[0], -1),
                         tail.expand(x.shape[0], -1)], dim=1)
    else:
        idx = torch.cat([(chosen[None] + offsets[:, None, None]).reshape(-1, x.shape[1]),
                         tail[:, None].expand(-1, x.shape[1])], dim=0)
    vals, pos = torch.topk(x.gather(dim, idx), k, dim=dim, largest=largest)
    return vals, idx.gather(dim, pos)


@torch.no_grad()
def logit_effects(W_dec: Tensor, W_U: Tensor, final_norm: DirectionMap | None = None, top: int = 10,
                  block: int = 1024) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Tokens each feature's decoder direction promotes and suppresses most, through the unembedding.

    W_dec [d_sae, d_in], W_U [d_in, vocab]. Returns (top_ids, top_vals, bottom_ids, bottom_vals), each
    [d_sae, top]; top is sorted descending, bottom ascending (most negative first).
    """
    d_sae = W_dec.shape[0]
    top = min(top, W_U.shape[1])
    out = [torch.empty((d_sae, top), dtype=dt) for dt in (torch.long, torch.float32) * 2]
    W_U = W_U.float()
    for i0 in range(0, d_sae, block):
        i1 = min(i0 + block, d_sae)
        directions = W_dec[i0:i1].to(W_U.device, torch.float32)
        if final_norm is not None:
            directions = final_norm(directions)
        effects = directions @ W_U  # [b, vocab]
        hi_vals, hi_ids = top_k(effects, top)
        lo_vals, lo_ids = top_k(effects, top, largest=False)
        for target, part in zip(out, (hi_ids, hi_vals, lo_ids, lo_vals)):
            target[i0:i1] = part.cpu()
    return tuple(out)


@torch.no_grad()
def decoder_neighbors(W_dec: Tensor, n: int = 10, block: int = 4096) -> tuple[Tensor, Tensor]:
    """For each feature, the n other features whose decoder directions have the highest cosine similarity.

    Exact (every pair is compared, one [block, block] tile at a time, each tile once: cos is symmetric).
    Returns (ids, cos), each [d_sae, n]. A zero-norm direction has cosine 0 with everything.
    """
    d_sae = W_dec.shape[0]
    n = min(n, max(d_sae - 1, 0))
    unit = W_dec.float()
    unit = unit / unit.norm(dim=1, keepdim=True).clamp(min=1e-12)
    cos = torch.full((d_sae, n), -float("inf"), device=unit.device)
    ids = torch.full((d_sae, n), -1, dtype=torch.long, device=unit.device)
    starts = range(0, d_sae, block)
    for i0 in starts:
        rows = slice(i0, min(i0 + block, d_sae))
        for j0 in starts[i0 // block:]:
            cols = slice(j0, min(j0 + block, d_sae))
            sims = unit[rows] @ unit[cols].T  # [bi, bj]
            if i0 == j0:
                sims.fill_diagonal_(-float("inf"))  # not its own neighbour
            vals, idx = top_k(sims, min(n, sims.shape[1]), dim=1)
            _merge(cos, ids, rows, vals, idx + j0)
            if j0 != i0:  # the same tile, read down its columns, for the features of the column block
                vals, idx = top_k(sims, min(n, sims.shape[0]), dim=0)
                _merge(cos, ids, cols, vals.T, idx.T + i0)
    return ids.cpu(), cos.cpu()


def _merge(cos: Tensor, ids: Tensor, rows: slice, vals: Tensor, idx: Tensor) -> None:
    """Keep the n best of the running neighbours and a tile's candidates (ties: the lower feature id first)."""
    all_vals, all_ids = torch.cat([cos[rows], vals], dim=1), torch.cat([ids[rows], idx], dim=1)
    order = torch.argsort(all_ids, dim=1)  # ids ascending, then a stable sort by value
    all_vals, all_ids = all_vals.gather(1, order), all_ids.gather(1, order)
    best = torch.sort(all_vals, dim=1, descending=True, stable=True).indices[:, :cos.shape[1]]
    cos[rows], ids[rows] = all_vals.gather(1, best), all_ids.gather(1, best)
