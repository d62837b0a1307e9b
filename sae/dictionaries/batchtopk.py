"""BatchTopK SAE (Bussmann et al. 2024), trained with the sparse kernels of the TopK SAE.

k * N activations are kept over the whole batch instead of k per token. The inference threshold is an EMA
of the smallest kept activation (SAELens' rule); SAELens saves the dictionary as a `jumprelu` SAE with that
threshold, so after training it is a plain JumpReLU SAE that any SAELens install loads.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
from torch import Tensor

from sae.dictionaries.registry import Architecture
from sae.dictionaries.sparse_ops import Pairs, pairs_from_flat
from sae.dictionaries.topk import SparseTopKMixin


@dataclass
class SparseBatchTopKTrainingSAEConfig(BatchTopKTrainingSAEConfig):
    """BatchTopKTrainingSAEConfig plus the dead-feature window that SAELens keeps in its trainer."""

    aux_loss_coefficient: float = 1 / 32
    """AuxK loss weight; 1/32 as in Gao et al. 2024 (SAELens defaults to 1)."""
    dead_feature_window: int = 1000
    """Training steps without firing after which a feature counts as dead for the AuxK loss."""

    @classmethod
    def architecture(cls) -> str:
        return "sparsescope_batchtopk"


class SparseBatchTopKTrainingSAE(SparseTopKMixin, BatchTopKTrainingSAE):
    """SAELens' BatchTopKTrainingSAE with a sparse training forward and backward pass."""

    cfg: SparseBatchTopKTrainingSAEConfig  # type: ignore[assignment]

    def __init__(self, cfg: SparseBatchTopKTrainingSAEConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)
        self._init_firing()

    def _select(self, pre: Tensor) -> tuple[Tensor, Pairs]:
        n = pre.shape[0]
        # Top-k of the raw pre-activations picks the same positive entries as SAELens' top-k of relu(pre);
        # where fewer than k * N are positive both keep only zeros beyond them.
        values, flat = pre.view(-1).topk(int(self.cfg.k * n), sorted=False)
        flat, order = flat.sort()
        return values[order], pairs_from_flat(flat, n, self.cfg.d_sae)

    @torch.no_grad()
    def _after_sparse_forward(self, hidden: Tensor) -> None:
        positive = hidden[hidden > 0]
        if positive.numel():
            lr = self.cfg.topk_threshold_lr
            min_positive = positive.min().to(self.topk_threshold.dtype)
            self.topk_threshold = (1 - lr) * self.topk_threshold + lr * min_positive


BATCHTOPK = Architecture(
    "batchtopk", SparseBatchTopKTrainingSAE, SparseBatchTopKTrainingSAEConfig, JumpReLUSAE, JumpReLUSAEConfig,
    saelens_names=("sparsescope_batchtopk", "batchtopk"), default_k=32,
    k_meaning="active features per token, on average over a batch", k_per_batch=True)
