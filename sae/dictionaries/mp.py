"""Matching-pursuit SAE ("From Flat to Hierarchical", MP-SAE) with the fast Gram encoder of pursuit.py.

Subclasses SAELens' MatchingPursuitSAE classes (tied, unit-norm dictionary, decode and forward unchanged);
only the encoder is replaced. Two modes:
- fixed k (default): exactly k steps, in training and inference;
- adaptive (cfg.adaptive): stop an input when its residual norm falls below cfg.residual_threshold or an
  atom repeats (cfg.stop_on_duplicate_support), up to cfg.max_iterations steps (d_in if None) -- SAELens'
  own stopping rules, so SAELens' MatchingPursuitSAE with the same settings gives the same codes. Training
  with adaptive=true stops the same way, at most k steps (the paper's training loop), and the saved
  dictionary gets max_iterations = k.
b_dec starts at the geometric median, or at zero (median_init=False: the paper's MP-SAE has no bias;
decoder_bias=False keeps it there): see init_from_sample.
Registered as `sparsescope_mp`: `import sae` before `SAE.load_from_disk`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, NamedTuple

import torch
from sae_lens.saes.matching_pursuit_sae import (
    MatchingPursuitSAE,
    MatchingPursuitSAEConfig,
    MatchingPursuitTrainingSAE,
    MatchingPursuitTrainingSAEConfig,
)
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput
from torch import Tensor

from sae.dictionaries.pursuit import STOP_REASONS, Pursuit, gram, pursue, rederive, scatter_codes
from sae.dictionaries.registry import Architecture, Option
from store.errors import InputError

__all__ = ["MP", "MPSAE", "MPSAEConfig", "MPSteps", "MPTrainingSAE", "MPTrainingSAEConfig", "STOP_REASONS",
           "check_residual_threshold", "mp_encode_steps", "with_residual_threshold"]


@dataclass
class MPSAEConfig(MatchingPursuitSAEConfig):
    """MatchingPursuitSAEConfig plus the number of steps it was trained with and the inference mode."""

    k: int = 32
    """Pursuit steps in fixed-k mode (the number it was trained with)."""
    adaptive: bool = False
    """Use SAELens' stopping rules (threshold, repeated atom, max_iterations) instead of exactly k steps."""

    @classmethod
    def architecture(cls) -> str:
        return "sparsescope_mp"


@dataclass
class MPTrainingSAEConfig(MatchingPursuitTrainingSAEConfig):
    """Fixed k: training runs exactly k steps. Adaptive: training stops each input as the paper's training loop
    does (residual norm below residual_threshold, or a repeated atom), at most k steps, and so does the saved
    dictionary (its max_iterations is k unless set)."""

    k: int = 32
    """Pursuit steps per input (the most steps in adaptive mode)."""
    adaptive: bool = False
    """Train with the stopping rules, and save a dictionary that infers with them (see MPSAEConfig)."""
    decoder_bias: bool = True
    """Learn b_dec; False keeps it at zero (the paper's MP-SAE has no bias)."""
    median_init: bool = True
    """Start b_dec at the geometric median of a sample (False: at zero, as the paper's MP-SAE)."""

    @classmethod
    def architecture(cls) -> str:
        return "sparsescope_mp"

    def get_inference_sae_cfg_dict(self) -> dict:
        cfg = super().get_inference_sae_cfg_dict()
        if self.adaptive and self.max_iterations is None:
            cfg["max_iterations"] = self.k  # infer with the step budget it was trained with
        return cfg


class MPSteps(NamedTuple):
    feature_acts: Tensor
    """[N, d_sae] summed coefficients per atom."""
    atom_ids: Tensor
    """[N, S] atom chosen at each pursuit step, -1 where nothing was added (S = k, or the most steps any
    input took in adaptive mode)."""
    step_coeffs: Tensor
    """[N, S] coefficient added at each step."""
    n_steps: Tensor
    """[N] steps taken."""
    stop_reason: Tensor
    """[N] index into STOP_REASONS."""


def _schedule(cfg, adaptive: bool | None) -> tuple[int, float, bool]:
    """(steps, residual threshold, stop on repeat) for the chosen mode."""
    k = getattr(cfg, "k", None)
    adaptive = getattr(cfg, "adaptive", True) if adaptive is None else adaptive
    if not adaptive and k is not None:
        return k, 0.0, False
    return cfg.max_iterations or cfg.d_in, cfg.residual_threshold, cfg.stop_on_duplicate_support


def _cached_gram(sae) -> Tensor | None:
    """W W^T, recomputed only when W_dec changed (in place or replaced; the checksum catches .data edits)."""
    W = sae.W_dec.detach()
    key = (W.data_ptr(), sae.W_dec._version, tuple(W.shape), W.dtype, W.device, float(W.sum()))
    cached = sae.__dict__.get("_gram_cache")
    if cached is None or cached[0] != key:
        cached = (key, gram(W))
        sae.__dict__["_gram_cache"] = cached
    return cached[1]


def _encode(sae, x: Tensor, adaptive: bool | None) -> tuple[Tensor, Pursuit]:
    """Feature activations [..., d_sae] (differentiable when grad is on) and the pursuit record."""
    sae_in = sae.process_sae_in(x)
    lead, d_sae = sae_in.shape[:-1], sae.cfg.d_sae
    flat = sae_in.reshape(-1, sae_in.shape[-1])
    steps, threshold, stop_on_repeat = _schedule(sae.cfg, adaptive)
    found = pursue(flat.detach(), sae.W_dec.detach(), _cached_gram(sae), steps, threshold, stop_on_repeat)
    used = max(int(found.n_steps.max()), 1) if found.n_steps.numel() else 1
    found = Pursuit(found.atom_ids[:, :used], found.coeffs[:, :used], found.n_steps, found.stop_reason)
    coeffs = found.coeffs
    if torch.is_grad_enabled() and (flat.requires_grad or sae.W_dec.requires_grad):
        coeffs, _ = rederive(flat, sae.W_dec, found.atom_ids)
    acts = scatter_codes(found.atom_ids, coeffs, d_sae).reshape(*lead, d_sae)
    return sae.hook_sae_acts_post(acts), found


def mp_encode_steps(sae, x: Tensor, adaptive: bool | None = None) -> MPSteps:
    """Encode x [..., d_in] and report, per input (leading dims flattened), the atom chosen at each step.

    adaptive None uses the dictionary's configured mode. Works on MPSAE, MPTrainingSAE and SAELens'
    MatchingPursuitSAE (which has no k: adaptive only).
    """
    acts, found = _encode(sae, x, adaptive)
    return MPSteps(acts.reshape(-1, sae.cfg.d_sae), found.atom_ids, found.coeffs, found.n_steps,
                   found.stop_reason)


def check_residual_threshold(threshold: float, what: str = "the residual threshold") -> None:
    """InputError (one line) unless the threshold is a finite number >= 0 (`what` names it in the message)."""
    if not (math.isfinite(threshold) and threshold >= 0):
        raise InputError(f"{what} must be a finite number >= 0 (got {threshold})")


def with_residual_threshold(sae, threshold: float, arch_name: str = "") -> None:
    """Switch a loaded MP dictionary to adaptive inference: stop each input once its residual norm (raw
    activation units) falls below `threshold` or an atom repeats, at most its k steps (or max_iterations).

    InputError (one line) for a negative threshold or a dictionary that does not encode by pursuit.
    """
    if not isinstance(sae.cfg, MatchingPursuitSAEConfig):
        raise InputError(f"a residual threshold applies to mp (matching pursuit) dictionaries, not "
                         f"{arch_name or sae.cfg.architecture()} ones")
    check_residual_threshold(threshold)
    fields = {"residual_threshold": threshold, "max_iterations": sae.cfg.max_iterations or getattr(sae.cfg, "k", None)}
    if hasattr(sae.cfg, "adaptive"):  # ours; SAELens' own MatchingPursuitSAE is always adaptive
        fields["adaptive"] = True
    sae.cfg = replace(sae.cfg, **fields)


class MPSAE(MatchingPursuitSAE):
    """Inference MP-SAE: SAELens' class with the fast encoder."""

    cfg: MPSAEConfig  # type: ignore[assignment]

    def encode(self, x: Tensor) -> Tensor:
        return _encode(self, x, None)[0]


class MPTrainingSAE(MatchingPursuitTrainingSAE):
    """Training MP-SAE: fixed k steps, fast selection, coefficients re-derived for the backward pass."""

    cfg: MPTrainingSAEConfig  # type: ignore[assignment]

    def encode_with_hidden_pre(self, x: Tensor) -> tuple[Tensor, Tensor]:
        acts = _encode(self, x, False)[0]
        # Like SAELens: MP has no single pre-activation; a broadcast zero avoids a dense allocation.
        return acts, acts.new_zeros(()).expand_as(acts)

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        if self.cfg.normalize_activations != "none":
            return super().training_forward_pass(step_input)
        x = step_input.sae_in.to(self.dtype)
        sae_in = self.process_sae_in(x)
        cfg = self.cfg
        # Adaptive (the paper's training loop): stop on a small residual or a repeated atom, at most k steps.
        threshold, stop_on_repeat = (cfg.residual_threshold, cfg.stop_on_duplicate_support) if cfg.adaptive \
            else (0.0, False)
        found = pursue(sae_in.detach(), self.W_dec.detach(), gram(self.W_dec.detach()), cfg.k, threshold,
                       stop_on_repeat)
        coeffs, residual = rederive(sae_in, self.W_dec, found.atom_ids)
        # sum_t a_t W[j_t] = sae_in - residual, so the decoder output needs no [N, d_sae] matmul.
        sae_out = x - residual
        mse_loss = self.mse_loss_fn(sae_out, x).sum(dim=-1).mean()
        codes = _coo(found.atom_ids, coeffs.detach(), self.cfg.d_sae)
        used = found.atom_ids[found.atom_ids >= 0]
        metrics = {"fired": torch.bincount(used, minlength=self.cfg.d_sae) > 0,
                   "l0": torch.tensor(codes._nnz() / max(x.shape[0], 1))}
        return TrainStepOutput(sae_in=x, sae_out=sae_out, feature_acts=codes, hidden_pre=codes,
                               loss=mse_loss, losses={"mse_loss": mse_loss}, metrics=metrics)

    @torch.no_grad()
    def init_from_sample(self, sample: Tensor) -> None:
        """Data-dependent initialisation (sae.dictionaries.init_from_sample): b_dec at the geometric median of
        the sample, or zero with median_init=False or decoder_bias=False.

        The median suits activations with a large common offset (a language model's residual stream: on
        SmolLM2's layer 6, 150k tokens, FVU 0.55 against 0.64 from zero). On data without one it hurts MP:
        pursuit adds only positive multiples of atoms, so it cannot put back what centring on an inside point
        removed, and the atoms drift to mixtures (the paper's synthetic hierarchy, bench/hierarchy.py: 0.44 of
        the children recovered from the median, 1.0 from zero).
        """
        if self.cfg.median_init and self.cfg.decoder_bias:
            from sae.dictionaries.factory import geometric_median

            self.b_dec.copy_(geometric_median(sample))
        else:
            self.b_dec.zero_()

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Project the atoms back to unit norm (MP's selection and coefficients assume it)."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-8))

    def after_step(self, batch: Tensor, fired: Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Upkeep after each optimizer step (train_step): unit-norm atoms, and b_dec back to zero without a
        decoder bias (zeroed here rather than frozen, so that every parameter keeps a gradient: DDP hooks)."""
        self.normalize_decoder()
        if not self.cfg.decoder_bias:
            self.b_dec.zero_()


def _coo(atom_ids: Tensor, coeffs: Tensor, d_sae: int) -> Tensor:
    """Coalesced sparse [N, d_sae] code (repeated atoms summed), for SAELens' trainer and loggers."""
    rows = torch.arange(atom_ids.shape[0], device=atom_ids.device)[:, None].expand_as(atom_ids)
    used = atom_ids >= 0
    indices = torch.stack([rows[used], atom_ids[used]])
    return torch.sparse_coo_tensor(indices, coeffs[used], (atom_ids.shape[0], d_sae), check_invariants=False).coalesce()


OPTIONS = (
    Option("adaptive", False, "stop each input early (residual norm below residual_threshold, or an atom chosen "
                              "twice), at most k steps, in training and in the saved dictionary"),
    Option("decoder_bias", True, "learn a decoder bias b_dec (false: none, as the paper's MP-SAE)"),
    Option("median_init", True, "start b_dec at the geometric median of a sample (false: at zero, as the paper's "
                                "MP-SAE; better where the data have no common offset)"),
    Option("residual_threshold", 0.01, "adaptive mode's residual norm to stop at, on inputs scaled to mean norm "
                                       "sqrt(d_in) (saved in raw activation units)"),
)


def check_mp_options(options: Mapping[str, Any], d_sae: int | None) -> None:
    """InputError (one line) for MP options that cannot hold."""
    check_residual_threshold(options["residual_threshold"], "--option residual_threshold")


MP = Architecture(
    "mp", MPTrainingSAE, MPTrainingSAEConfig, MPSAE, MPSAEConfig, saelens_names=("sparsescope_mp", "matching_pursuit"),
    default_k=32, k_meaning="pursuit steps (the most steps with adaptive=true)",
    config_fields={"decoder_init_norm": 1.0}, has_pursuit_steps=True, tied=True, options=OPTIONS,
    check=check_mp_options)
