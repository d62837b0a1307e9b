"""A learned dictionary's codes on task activations, through its own encode/decode (any registered architecture).

Every dictionary decodes affinely in its codes (x_hat = decode(z); a codebook scales by its input's LayerNorm
statistics, which encode records), so the part a set of features contributes is decode(z * mask) - decode(0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sae.dictionaries import feature_activations


@dataclass
class Codes:
    z: torch.Tensor
    """[n, d_sae] what decode takes."""
    active: torch.Tensor
    """[n, d_sae] bool: the feature fires (what statistics count as firing)."""
    base: torch.Tensor
    """[n, d_in] decode of no features (b_dec; a codebook: the input's LayerNorm mean)."""
    recon: torch.Tensor
    """[n, d_in] the reconstruction."""


@torch.no_grad()
def encode(sae, x: torch.Tensor) -> Codes:
    x = x.to(sae.W_dec.device, sae.W_dec.dtype)
    active = feature_activations(sae, x) > 0
    z = sae.encode(x)  # last: a codebook's decode reads the statistics of the latest encode
    return Codes(z, active, sae.decode(torch.zeros_like(z)), sae.decode(z))


@torch.no_grad()
def part(sae, x: torch.Tensor, codes: Codes, mask: torch.Tensor) -> torch.Tensor:
    """[n, d_in] what the features in mask ([n, d_sae] or [d_sae], bool) add to x's reconstruction."""
    sae.encode(x.to(sae.W_dec.device, sae.W_dec.dtype))  # the statistics of x, for a codebook's decode
    return sae.decode(codes.z * mask.to(codes.z.dtype)) - codes.base
