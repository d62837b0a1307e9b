"""One optimisation step of any SparseScope dictionary: `train_step`, unit-testable on its own."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from sae_lens.saes.sae import TrainCoefficientConfig, TrainingSAE, TrainStepInput, TrainStepOutput
from torch import Tensor

GRAD_CLIP_NORM = 1.0
"""SAELens' trainer clips the gradient norm to 1 before every step; we do the same."""
WARM_UP_FRACTION = 0.05
"""Sparsity coefficients (L1, L0) warm up linearly over this share of the run, unless the config sets its own
warm-up (Anthropic, April 2024 update)."""


@dataclass
class StepOutput:
    loss: Tensor
    """Total loss of the step (detached scalar)."""
    mse: float
    """Mean over tokens of the squared reconstruction error summed over d_in (on the training inputs)."""
    fvu: float
    """Fraction of variance unexplained: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the batch."""
    l0: float
    """Mean number of active features per token."""
    fired: Tensor
    """bool [d_sae]: features active on at least one token of the batch."""
    losses: dict[str, float] = field(default_factory=dict)
    """Each loss term (mse_loss, l1_loss, auxiliary_reconstruction_loss, commitment_loss, ...)."""


def coefficients(sae: TrainingSAE, step: int, total_steps: int) -> dict[str, float]:
    """The sparsity coefficients at `step`, warmed up linearly (SAELens' CoefficientScheduler rule)."""
    values = {}
    for name, coeff in sae.get_coefficients().items():
        if not isinstance(coeff, TrainCoefficientConfig):
            coeff = TrainCoefficientConfig(value=coeff, warm_up_steps=0)
        warm_up = coeff.warm_up_steps or int(WARM_UP_FRACTION * total_steps)
        values[name] = coeff.value * min(1.0, (step + 1) / warm_up) if warm_up > 0 else coeff.value
    return values


def train_step(sae: TrainingSAE, batch: Tensor, optimizer: torch.optim.Optimizer, step: int,
               total_steps: int) -> StepOutput:
    """Forward, backward, clip, optimizer step, zero_grad and per-architecture upkeep on batch [N, d_in].

    Upkeep is the class's own `after_step(batch, fired, optimizer)` where it has one: AuxK dead-feature tracking
    (topk, batchtopk), unit-norm atoms (mp), usage tracking and dead-code replacement with reset optimizer moments
    (codebook). The SAE's own training_forward_pass is used, so the sparse fast paths of topk, batchtopk, mp and
    codebook apply.
    """
    sae.train()
    dead_mask = sae.dead_neuron_mask() if hasattr(sae, "dead_neuron_mask") else None
    output = sae.training_forward_pass(TrainStepInput(
        sae_in=batch, coefficients=coefficients(sae, step, total_steps), dead_neuron_mask=dead_mask,
        n_training_steps=step, is_logging_step=False))
    output.loss.backward()
    torch.nn.utils.clip_grad_norm_(sae.parameters(), GRAD_CLIP_NORM)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    fired, l0 = _firing(output, sae.cfg.d_sae)
    after_step = getattr(sae, "after_step", None)
    if after_step is not None:
        with torch.no_grad():
            after_step(batch, fired, optimizer)
    return _summarise(output, fired, l0)


def _firing(output: TrainStepOutput, d_sae: int) -> tuple[Tensor, float]:
    if "fired" in output.metrics:  # the sparse paths count without densifying
        return output.metrics["fired"], float(output.metrics["l0"])
    active = output.feature_acts.detach() > 0
    return active.any(dim=0), float(active.sum(dim=-1).float().mean())


@torch.no_grad()
def reset_optimizer_rows(optimizer: torch.optim.Optimizer, param: Tensor, rows: Tensor) -> None:
    """Zero the optimizer's per-element state (Adam's moments) for some rows of param, e.g. reset codes."""
    for value in optimizer.state.get(param, {}).values():
        if isinstance(value, Tensor) and value.shape == param.shape:
            value[rows.to(value.device)] = 0


@torch.no_grad()
def _summarise(output: TrainStepOutput, fired: Tensor, l0: float) -> StepOutput:
    x, x_hat = output.sae_in.detach().float(), output.sae_out.detach().float()
    x, x_hat = x.reshape(-1, x.shape[-1]), x_hat.reshape(-1, x_hat.shape[-1])
    error = (x - x_hat).pow(2).sum()
    variance = (x - x.mean(dim=0)).pow(2).sum()
    return StepOutput(
        loss=output.loss.detach(), mse=float(error / x.shape[0]), fvu=float(error / variance.clamp(min=1e-12)),
        l0=l0, fired=fired.detach().cpu(), losses={name: float(value) for name, value in output.losses.items()})
