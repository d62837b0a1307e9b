"""Sparse encoder and decoder kernels for dictionaries with few active features per token.

SAELens scatters the k chosen activations into a dense [N, d_sae] matrix and multiplies it by W_dec, then
backpropagates densely through the whole encoder (SAELens issue #428): three of its four big matmuls multiply
by a matrix that is mostly zeros. Here a sparse code is a list of (token, feature) pairs, the decoder is an
embedding bag (as in EleutherAI sparsify) and both backward passes only touch the chosen features.

torch's own embedding-bag weight gradient is ~30x slower on CPU than it needs to be, so both functions
compute their weight gradients with the sort-by-feature trick in `_feature_sums`: an embedding bag over the
*tokens*, one bag per feature.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class Pairs(NamedTuple):
    """The (token, feature) pairs of a sparse code, sorted by token."""

    rows: Tensor
    """[P] token of each pair, non-decreasing."""
    cols: Tensor
    """[P] feature of each pair."""
    row_offsets: Tensor
    """[N] index of each token's first pair."""
    by_feature: Tensor
    """[P] permutation that sorts the pairs by feature."""
    feature_offsets: Tensor
    """[d_sae] index (in by_feature order) of each feature's first pair."""


def full_precision(device: torch.device) -> torch.autocast:
    """Turn autocast off: the sparse kernels and matching pursuit's running updates need float32."""
    return torch.autocast(device_type=device.type, enabled=False)


def pairs_from_topk(indices: Tensor, d_sae: int) -> Pairs:
    """Pairs for a code with exactly k features per token: indices [N, k]."""
    n, k = indices.shape
    rows = torch.arange(n, device=indices.device).repeat_interleave(k)
    return _pairs(rows, indices.reshape(-1), torch.arange(0, n * k, k, device=indices.device), d_sae)


def pairs_from_flat(flat: Tensor, n_tokens: int, d_sae: int) -> Pairs:
    """Pairs for a code given as sorted flat indices token * d_sae + feature (a batch-wide top-k)."""
    rows, cols = flat // d_sae, flat % d_sae
    counts = torch.bincount(rows, minlength=n_tokens)
    return _pairs(rows, cols, torch.cumsum(counts, 0) - counts, d_sae)


def _pairs(rows: Tensor, cols: Tensor, row_offsets: Tensor, d_sae: int) -> Pairs:
    by_feature = torch.argsort(cols)
    counts = torch.bincount(cols, minlength=d_sae)
    return Pairs(rows, cols, row_offsets, by_feature, torch.cumsum(counts, 0) - counts)


def _feature_sums(pairs: Pairs, weights: Tensor, per_token: Tensor) -> Tensor:
    """[d_sae, d] rows sum_{pairs p of feature j} weights[p] * per_token[token of p]."""
    order = pairs.by_feature
    return F.embedding_bag(pairs.rows[order], per_token.contiguous(), pairs.feature_offsets,
                           mode="sum", per_sample_weights=weights[order].contiguous())


def _pair_dots(pairs: Pairs, per_token: Tensor, per_feature: Tensor) -> Tensor:
    """[P] dot(per_token[token of p], per_feature[feature of p])."""
    # The per-sample-weight gradient of an embedding bag is exactly this gather-dot, fused; the unfused
    # version materialises a [P, d] gather (300 MB at N=4096, k=32, d=576) and runs ~10x slower on CPU.
    return torch.ops.aten._embedding_bag_per_sample_weights_backward(
        per_token.contiguous(), per_feature.contiguous(), pairs.cols, pairs.row_offsets, pairs.rows, 0, -1)


def sparse_decode(coefficients: Tensor, W_dec: Tensor, pairs: Pairs) -> Tensor:
    """[N, d] sum over each token's pairs of coefficient * W_dec[feature] (no bias)."""
    return _SparseDecode.apply(coefficients, W_dec, pairs)


def gather_encode(values: Tensor, sae_in: Tensor, b_dec: Tensor | None, W_enc: Tensor, b_enc: Tensor,
                  scale: Tensor | None, pairs: Pairs) -> Tensor:
    """Differentiable view of precomputed pre-activations at the chosen pairs.

    values [P] = ((sae_in - b_dec) @ W_enc + b_enc) * scale at each pair, already computed densely without
    grad; the result carries gradients to b_dec, W_enc, b_enc and scale (not to sae_in: training inputs are
    data). `scale` (the decoder row norms of a TopK SAE that rescales by them) and `b_dec` may be None.
    """
    return _GatherEncode.apply(values, sae_in, b_dec, W_enc, b_enc, scale, pairs)


class _SparseDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, coefficients: Tensor, W_dec: Tensor, pairs: Pairs) -> Tensor:
        ctx.save_for_backward(coefficients, W_dec)
        ctx.pairs = pairs
        return F.embedding_bag(pairs.cols, W_dec, pairs.row_offsets, mode="sum",
                               per_sample_weights=coefficients.contiguous())

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        coefficients, W_dec = ctx.saved_tensors
        grad_coef = _pair_dots(ctx.pairs, grad_out, W_dec) if ctx.needs_input_grad[0] else None
        grad_W = _feature_sums(ctx.pairs, coefficients, grad_out) if ctx.needs_input_grad[1] else None
        return grad_coef, grad_W, None


class _GatherEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, sae_in, b_dec, W_enc, b_enc, scale, pairs):
        centred = sae_in if b_dec is None else sae_in - b_dec.detach()
        ctx.save_for_backward(values, centred, W_enc, scale)
        ctx.pairs = pairs
        return values.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        values, centred, W_enc, scale = ctx.saved_tensors
        pairs, d_sae = ctx.pairs, W_enc.shape[1]
        grad_pre = grad if scale is None else grad * scale[pairs.cols]
        grad_scale = None
        if scale is not None and ctx.needs_input_grad[5]:
            pre = values / scale[pairs.cols]
            grad_scale = torch.zeros(d_sae, dtype=grad.dtype, device=grad.device).index_add_(
                0, pairs.cols, grad * pre)
        per_feature = torch.zeros(d_sae, dtype=grad.dtype, device=grad.device).index_add_(0, pairs.cols, grad_pre)
        grad_W_enc = _feature_sums(pairs, grad_pre, centred).t() if ctx.needs_input_grad[3] else None
        # b_dec enters every token as -b_dec, so its gradient only needs the per-feature sums (a gemv),
        # not the [N, d] input gradient.
        grad_b_dec = -(W_enc @ per_feature) if ctx.needs_input_grad[2] else None
        grad_b_enc = per_feature if ctx.needs_input_grad[4] else None
        return None, None, grad_b_dec, grad_W_enc, grad_b_enc, grad_scale, None
