"""Head attribution of attention-output (hook_z) dictionaries, measured during the statistics pass.

The input of a hook_z dictionary is z[t] flattened head-major, so the linear part of feature i's pre-activation
splits exactly into one term per head:
    c_{t,h}(i) = s_t * z_h[t] . W_enc[h-block, i]        sum_h c_{t,h}(i) = s_t * z[t] . W_enc[:, i]
(s_t: the input scale of a `constant_norm_rescale` dictionary, else 1). c_{t,h} is also the sum over source
positions of analysis.heads.dfa's DFA_{h,s}(i) at destination t. The bias terms (b_enc, and b_dec . W_enc where
b_dec is subtracted from the input) belong to no head and are left out, as DFA leaves them out.

Stored weight of head h for feature i, over every firing (t with activation > 0, past the skipped first positions):
    w_{i,h} = sum_t |c_{t,h}(i)| / sum_t sum_h' |c_{t,h'}(i)|
a ratio of sums, so strong firings weigh more; absolute values because heads can cancel, which makes signed
shares unbounded. A feature's weights sum to 1; a feature that never fires gets no rows. For matching-pursuit and
codebook dictionaries c is the split of the linear score W_enc . z (the first pursuit step / the code match), as in
DFA. Dictionaries that layer-normalise their input have no per-head split and get no head attribution.
"""
from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

_HOOK_Z = re.compile(r"^blocks\.\d+\.attn\.hook_z$")


class HeadShareAccumulator:
    """Per feature and head: sum over firings of |c_{t,h}| (see the module docstring)."""

    def __init__(self, sae, n_heads: int, device: torch.device | str = "cpu"):
        self.n_heads = n_heads
        d_in, d_sae = sae.W_enc.shape
        self.d_head = d_in // n_heads
        self.rescale = getattr(sae.cfg, "normalize_activations", "none") == "constant_norm_rescale"
        # (head, d_head, feature): head h's block of the encoder
        self.w_enc = sae.W_enc.detach().float().to(device).reshape(n_heads, self.d_head, d_sae)
        self.total = torch.zeros(n_heads, d_sae, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, x: Tensor, acts: Tensor, keep: Tensor) -> None:
        """x [n, d_in] the dictionary's input rows, acts [n, d_sae] their activations, keep [n] rows to count."""
        x = x.to(self.w_enc.device, torch.float32)
        if self.rescale:  # the scale s_t that SAELens applies to the input before encoding
            x = x * (x.shape[-1] ** 0.5 / x.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        fired = ((acts > 0) & keep[:, None]).to(torch.float32)  # (n, feature)
        xh = x.view(x.shape[0], self.n_heads, self.d_head)  # (n, head, d_head)
        for h in range(self.n_heads):  # one head at a time: (n, feature) at most, as the encoder holds
            term = xh[:, h] @ self.w_enc[h]  # (n, feature) c_{t,h}
            self.total[h] += (term.abs() * fired).sum(0).double()

    def finish(self) -> pa.Table:
        """Rows (feature, head, weight) of every feature with a non-zero total, for the feature_heads table."""
        total = self.total.cpu().numpy().T  # (feature, head)
        norm = total.sum(1)
        live = np.flatnonzero(norm > 0)
        weights = total[live] / norm[live, None]
        feature, head = np.meshgrid(live, np.arange(self.n_heads), indexing="ij")
        return pa.table({"feature": pa.array(feature.ravel(), pa.int32()),
                         "head": pa.array(head.ravel(), pa.int16()),
                         "weight": pa.array(weights.ravel(), pa.float32())})


def head_share_accumulator(sae, model, hook: str) -> HeadShareAccumulator | None:
    """The accumulator of a hook_z dictionary whose input splits by head, else None."""
    if not _HOOK_Z.match(hook or ""):
        return None
    if getattr(sae.cfg, "normalize_activations", "none") == "layer_norm":
        return None
    n_heads = model.cfg.n_heads
    if sae.W_enc.shape[0] != n_heads * model.cfg.d_head:
        return None
    return HeadShareAccumulator(sae, n_heads, device=sae.W_dec.device)
