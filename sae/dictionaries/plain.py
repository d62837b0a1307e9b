"""ReLU (L1) and JumpReLU (L0) SAEs: SAELens' own classes, trained and saved as they are."""
from __future__ import annotations

from sae_lens.saes.jumprelu_sae import (
    JumpReLUSAE,
    JumpReLUSAEConfig,
    JumpReLUTrainingSAE,
    JumpReLUTrainingSAEConfig,
)
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig, StandardTrainingSAE, StandardTrainingSAEConfig

from sae.dictionaries.registry import Architecture

# Default coefficients are for inputs scaled to mean norm sqrt(d_in): relu's L1 as in Anthropic's April 2024
# update, SAELens' L0 for jumprelu.
RELU = Architecture(
    "relu", StandardTrainingSAE, StandardTrainingSAEConfig, StandardSAE, StandardSAEConfig,
    saelens_names=("standard",), default_sparsity=5.0, sparsity_meaning="L1 penalty",
    sparsity_field="l1_coefficient")
JUMPRELU = Architecture(
    "jumprelu", JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig, JumpReLUSAE, JumpReLUSAEConfig,
    saelens_names=("jumprelu",), default_sparsity=1.0, sparsity_meaning="L0 penalty",
    sparsity_field="l0_coefficient")
