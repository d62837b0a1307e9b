"""Statistics of a dictionary's weights alone: direct logit effects and nearest decoder directions.

Both are blocked over features so the largest temporary is [block, vocab] or [block, d_sae].
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
        hi_vals, hi_ids = torch.topk(effects, top, dim=1)
        lo_vals, lo_ids = torch.topk(effects, top, dim=1, largest=False)
        for target, part in zip(out, (hi_ids, hi_vals, lo_ids, lo_vals)):
            target[i0:i1] = part.cpu()
    return tuple(out)


@torch.no_grad()
def decoder_neighbors(W_dec: Tensor, n: int = 10, block: int = 1024) -> tuple[Tensor, Tensor]:
    """For each feature, the n other features whose decoder directions have the highest cosine similarity.

    Exact (every pair is compared, one [block, d_sae] slice at a time). Returns (ids, cos), each [d_sae, n].
    A zero-norm direction has cosine 0 with everything.
    """
    d_sae = W_dec.shape[0]
    n = min(n, max(d_sae - 1, 0))
    unit = W_dec.float()
    unit = unit / unit.norm(dim=1, keepdim=True).clamp(min=1e-12)
    ids = torch.empty((d_sae, n), dtype=torch.long)
    cos = torch.empty((d_sae, n), dtype=torch.float32)
    for i0 in range(0, d_sae, block):
        i1 = min(i0 + block, d_sae)
        sims = unit[i0:i1] @ unit.T  # [b, d_sae]
        sims[torch.arange(i1 - i0), torch.arange(i0, i1)] = -float("inf")  # not its own neighbour
        vals, idx = torch.topk(sims, n, dim=1)
        ids[i0:i1], cos[i0:i1] = idx.cpu(), vals.cpu()
    return ids, cos
