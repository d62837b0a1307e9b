"""What the user asks for (DictSpec) and the SAELens training dictionary that realises it."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
from sae_lens.saes.sae import SAEMetadata, TrainingSAE
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
from torch import Tensor

from sae.dictionaries.batchtopk import SparseBatchTopKTrainingSAE, SparseBatchTopKTrainingSAEConfig
from sae.dictionaries.codebook import CodebookTrainingSAE, CodebookTrainingSAEConfig, kmeans_init
from sae.dictionaries.mp import MPTrainingSAE, MPTrainingSAEConfig
from sae.dictionaries.topk import SparseTopKTrainingSAE, SparseTopKTrainingSAEConfig

ARCHITECTURES: tuple[str, ...] = ("relu", "topk", "batchtopk", "jumprelu", "mp", "codebook")
K_ARCHITECTURES: tuple[str, ...] = ("topk", "batchtopk", "mp", "codebook")
"""Architectures with a number of active features (or pursuit steps, or codes) per token."""
SPARSITY_ARCHITECTURES: tuple[str, ...] = ("relu", "jumprelu")
"""Architectures with a sparsity penalty instead (relu: L1, jumprelu: L0)."""
DEFAULT_K = {"topk": 32, "batchtopk": 32, "mp": 32, "codebook": 8}
DEFAULT_SPARSITY = {"relu": 5.0, "jumprelu": 1.0}
"""On inputs scaled to mean norm sqrt(d_in): relu's L1 as in Anthropic's April 2024 update, SAELens' L0."""


def default_d_sae(d_in: int) -> int:
    """8 features (codes) per input dimension."""
    return 8 * d_in


@dataclass(frozen=True)
class DictSpec:
    arch: str
    """One of ARCHITECTURES."""
    d_in: int
    """Width of the activations (n_heads * d_head for hook_z)."""
    d_sae: int
    """Number of features (atoms, codes)."""
    k: int | None = None
    """Active features per token (topk, batchtopk), pursuit steps (mp), codes per token (codebook); None: default."""
    l1: float | None = None
    """Sparsity coefficient (relu: L1, jumprelu: L0); None: default."""
    hook_name: str = ""
    """TransformerLens hook the activations come from (recorded in the saved dictionary)."""
    model_name: str = ""
    """Model the activations come from (recorded in the saved dictionary)."""
    hook_head_index: int | None = None
    """Single attention head the activations come from, if any."""

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r} (choose from {', '.join(ARCHITECTURES)})")
        for name in ("d_in", "d_sae"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer (got {value!r})")
        if self.k is not None:
            if self.arch not in K_ARCHITECTURES:
                raise ValueError(f"--k does not apply to {self.arch} (it is for {', '.join(K_ARCHITECTURES)})")
            if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= self.d_sae:
                detail = f"{self.k} > {self.d_sae}" if isinstance(self.k, int) and self.k > 0 else repr(self.k)
                raise ValueError(f"--k must be between 1 and d_sae (got {detail})")
        if self.l1 is not None:
            if self.arch not in SPARSITY_ARCHITECTURES:
                raise ValueError(f"--l1 does not apply to {self.arch} (it is for {', '.join(SPARSITY_ARCHITECTURES)})")
            if not isinstance(self.l1, (int, float)) or not math.isfinite(self.l1) or self.l1 < 0:
                raise ValueError(f"--l1 must be a non-negative number (got {self.l1!r})")
        if self.hook_head_index is not None and self.hook_head_index < 0:
            raise ValueError(f"--head must be a non-negative head index (got {self.hook_head_index})")

    @property
    def k_or_default(self) -> int | None:
        return self.k if self.k is not None else DEFAULT_K.get(self.arch)

    @property
    def sparsity_or_default(self) -> float | None:
        return self.l1 if self.l1 is not None else DEFAULT_SPARSITY.get(self.arch)


def _common(spec: DictSpec, device: str | torch.device) -> dict:
    """Config fields every architecture shares."""
    metadata = SAEMetadata(model_name=spec.model_name or None, hook_name=spec.hook_name or None,
                           hook_head_index=spec.hook_head_index)
    # SAELens' convention for attention outputs: the dictionary takes [..., n_heads, d_head] and flattens it
    # head-major, so it splices into hook_z directly. Training always sees flattened rows.
    hook_z = spec.hook_name.endswith("hook_z") and spec.hook_head_index is None
    return dict(d_in=spec.d_in, d_sae=spec.d_sae, device=str(device), metadata=metadata,
                reshape_activations="hook_z" if hook_z else "none")


def build_training_sae(spec: DictSpec, device: str | torch.device = "cpu") -> TrainingSAE:
    """A freshly initialised SAELens TrainingSAE for spec (fp32; SAELens' init, tied encoder where it has one)."""
    common, k = _common(spec, device), spec.k_or_default
    if spec.arch == "relu":
        return StandardTrainingSAE(StandardTrainingSAEConfig(l1_coefficient=spec.sparsity_or_default, **common))
    if spec.arch == "jumprelu":
        return JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(l0_coefficient=spec.sparsity_or_default, **common))
    if spec.arch == "topk":
        return SparseTopKTrainingSAE(SparseTopKTrainingSAEConfig(k=k, **common))
    if spec.arch == "batchtopk":
        return SparseBatchTopKTrainingSAE(SparseBatchTopKTrainingSAEConfig(k=k, **common))
    if spec.arch == "mp":
        return MPTrainingSAE(MPTrainingSAEConfig(k=k, decoder_init_norm=1.0, **common))
    return CodebookTrainingSAE(CodebookTrainingSAEConfig(k=k, decoder_init_norm=None, apply_b_dec_to_input=False,
                                                         **common))


@torch.no_grad()
def init_from_sample(sae: TrainingSAE, sample: Tensor) -> None:
    """Data-dependent initialisation from sample rows [n, d_in] (already scaled like the training inputs).

    codebook: k-means on the LayerNorm'd rows; every other architecture: b_dec = geometric median of the rows
    (Gao et al. 2024 for TopK; the same centring helps the others).
    """
    sample = sample.reshape(-1, sae.cfg.d_in).to(sae.W_dec.device, sae.W_dec.dtype)
    if sample.shape[0] == 0:
        raise ValueError("init_from_sample needs at least one row")
    if isinstance(sae, CodebookTrainingSAE):
        # k-means costs rows x d_sae x d_in per iteration; 4 rows per code is plenty for a starting point.
        kmeans_init(sae, sample[: max(4 * sae.cfg.d_sae, 4096)])
        return
    sae.b_dec.copy_(geometric_median(sample))


def geometric_median(points: Tensor, iters: int = 50, eps: float = 1e-6) -> Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances to `points` [n, d]."""
    median = points.mean(dim=0)
    for _ in range(iters):
        weights = 1 / (points - median).norm(dim=-1).clamp(min=eps)
        update = (weights[:, None] * points).sum(dim=0) / weights.sum()
        if (update - median).norm() <= eps * (1 + median.norm()):
            return update
        median = update
    return median
