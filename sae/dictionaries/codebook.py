"""Codebook autoencoder ("Codebook Features", taufeeque9/codebook-features), registered as `sparsescope_codebook`.

h = LayerNorm(x) without affine (per-input mean mu and std sigma kept); the k codes with the highest cosine
similarity to h are chosen; the output is the mean of the chosen codes mapped back to the input scale,
x_hat = mean(C[ids]) * sigma + mu. W_dec is the codebook C [d_sae, d_in] in LayerNorm space; W_enc is its
row-normalised transpose (cosine scores do not depend on the code norms).

encode returns 1/k at the chosen codes and 0 elsewhere (not the cosine scores), so that decode is linear:
acts @ C is exactly the mean of the chosen codes, and generic feature statistics count every code alike.
decode needs the LayerNorm statistics of its input: encode stores them on the module and decode uses the
last ones stored (the decode(encode(x)) pattern, also with edited codes for steering). forward passes them
directly and does not depend on that state. forward is straight-through: its value is x_hat, its gradient
with respect to x is the identity (vqvae style), so the dictionary can sit in a model being differentiated.

Training loss (vqvae, beta = 0.25): ||sg[h] - q||^2 trains the codes, beta * ||h - sg[q]||^2 is the
commitment term (it only moves the inputs, so it has no effect on a dictionary over frozen activations but
is kept for fidelity and for the input gradient). Both are in LayerNorm space, so a few huge-norm tokens
(BOS) do not dominate the loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from sae_lens.saes.sae import (
    SAE,
    SAEConfig,
    TrainingSAE,
    TrainingSAEConfig,
    TrainStepInput,
    TrainStepOutput,
    _disable_hooks,
)
from torch import Tensor, nn

from sae.dictionaries.registry import Architecture
from sae.dictionaries.sparse_ops import full_precision, pairs_from_topk, sparse_decode
from sae.dictionaries.step import reset_optimizer_rows

LN_EPS = 1e-5
"""torch.nn.LayerNorm's default epsilon."""
MIN_SIMILARITY = 1e-6
"""Floor of a chosen code's similarity in feature_activations: a chosen code always counts as firing."""


@dataclass
class CodebookSAEConfig(SAEConfig):
    k: int = 8
    """Codes chosen per input."""

    @classmethod
    def architecture(cls) -> str:
        return "sparsescope_codebook"


@dataclass
class CodebookTrainingSAEConfig(TrainingSAEConfig):
    k: int = 8
    """Codes chosen per input."""
    beta: float = 0.25
    """Commitment loss weight (VQ-VAE)."""
    dead_code_steps: int = 200
    """Codes unused for this many training steps are reset to a random recent input plus noise (0: never)."""
    dead_code_noise: float = 0.1
    """Std of the noise added to a reset code, in LayerNorm units (inputs have unit std per entry)."""

    @classmethod
    def architecture(cls) -> str:
        return "sparsescope_codebook"


def layer_norm_with_stats(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(h, mu, sigma): LayerNorm without affine, h = (x - mu) / sigma, sigma = sqrt(var + eps)."""
    var, mu = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    sigma = torch.sqrt(var + LN_EPS)
    return (x - mu) / sigma, mu, sigma


def _indicators(ids: Tensor, d_sae: int, dtype: torch.dtype) -> Tensor:
    """[N, d_sae] with 1/k at the k chosen codes of each row: acts @ C is the mean of the chosen codes."""
    acts = torch.zeros(ids.shape[0], d_sae, dtype=dtype, device=ids.device)
    return acts.scatter_(1, ids, 1.0 / ids.shape[1])


class _CodebookMixin:
    """What the inference and training codebooks share: a tied, cosine-selected codebook."""

    W_dec: nn.Parameter
    b_dec: nn.Parameter

    def initialize_weights(self) -> None:
        # Codes live in LayerNorm space, where inputs have norm ~sqrt(d_in): so do N(0, 1) codes.
        # b_dec is kept (zero, unused) because generic SAELens code expects it.
        self.W_dec = nn.Parameter(torch.randn(self.cfg.d_sae, self.cfg.d_in, dtype=self.dtype,
                                              device=self.device))
        self.b_dec = nn.Parameter(torch.zeros(self.cfg.d_in, dtype=self.dtype, device=self.device))

    @property
    def W_enc(self) -> Tensor:  # type: ignore[override]
        return F.normalize(self.W_dec, dim=-1).T

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "W_enc":  # the base classes assign W_enc; ours is derived from the codebook
            return
        super().__setattr__(name, value)

    def code_ids(self, h: Tensor) -> Tensor:
        """[N, k] the k codes with the highest cosine similarity to LayerNorm'd inputs h [N, d_in], best first."""
        with torch.no_grad():
            return (h @ self.W_enc).topk(self.cfg.k, dim=-1).indices

    def _normalized_input(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, tuple[int, ...]]:
        sae_in = self.process_sae_in(x)
        lead = sae_in.shape[:-1]
        h, mu, sigma = layer_norm_with_stats(sae_in.reshape(-1, self.cfg.d_in))
        return h, mu, sigma, lead

    def encode(self, x: Tensor) -> Tensor:
        h, mu, sigma, lead = self._normalized_input(x)
        self.__dict__["_ln_stats"] = (mu.detach(), sigma.detach())
        acts = _indicators(self.code_ids(h), self.cfg.d_sae, h.dtype)
        return self.hook_sae_acts_post(acts.reshape(*lead, self.cfg.d_sae))

    @torch.no_grad()
    def feature_activations(self, x: Tensor) -> Tensor:
        """[N, d_sae]: at the k codes chosen for each row of x [..., d_in], the cosine similarity between the row's
        LayerNorm and the code (what the encoder ranks them by); 0 at the others.

        `encode` gives every chosen code the same 1/k (their mean is the output), which says nothing about how well
        a code matches; statistics and examples read this instead. A chosen code's value is at least
        MIN_SIMILARITY, so it fires wherever encode chooses it.
        """
        h = self._normalized_input(x)[0]
        scores = h @ self.W_enc  # <h, C_c> / ||C_c||
        top = scores.topk(self.cfg.k, dim=-1)
        cos = (top.values / h.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp_min(MIN_SIMILARITY)
        return torch.zeros_like(scores).scatter_(1, top.indices, cos)

    def decode(self, feature_acts: Tensor) -> Tensor:
        stats = self.__dict__.get("_ln_stats")
        flat = feature_acts.reshape(-1, self.cfg.d_sae)
        if stats is None or stats[0].shape[0] != flat.shape[0]:
            raise ValueError("codebook decode needs the LayerNorm statistics of its inputs: call encode on "
                             "the same inputs first (or use forward)")
        return self._decode_with_stats(flat, *stats, feature_acts.shape[:-1])

    def _decode_with_stats(self, flat_acts: Tensor, mu: Tensor, sigma: Tensor, lead) -> Tensor:
        out = self.hook_sae_recons(flat_acts @ self.W_dec)
        out = (out * sigma + mu).reshape(*lead, self.cfg.d_in)
        return self.reshape_fn_out(out, self.d_head)

    def _reconstruct(self, x: Tensor) -> Tensor:
        h, mu, sigma, lead = self._normalized_input(x)
        acts = _indicators(self.code_ids(h), self.cfg.d_sae, h.dtype).reshape(*lead, self.cfg.d_sae)
        acts = self.hook_sae_acts_post(acts)  # steering hooks edit the codes here
        return self._decode_with_stats(acts.reshape(-1, self.cfg.d_sae), mu, sigma, lead)

    def forward(self, x: Tensor) -> Tensor:
        x_hat = self._reconstruct(x)
        if self.use_error_term:
            with torch.no_grad(), _disable_hooks(self):
                clean = self._reconstruct(x)
            x_hat = x_hat + self.hook_sae_error(x - clean)
        x_in = x.to(x_hat.dtype)
        return self.hook_sae_output(x_in + (x_hat - x_in).detach())  # straight-through

    @torch.no_grad()
    def fold_activation_norm_scaling_factor(self, scaling_factor: float) -> None:
        # LayerNorm makes the codes scale-invariant: x * s gives the same h and codes, and the output is
        # rescaled by sigma. Nothing to fold.
        self.cfg.normalize_activations = "none"

    def fold_W_dec_norm(self) -> None:
        raise NotImplementedError("codebook codes are compared by cosine; their norms are part of the output")


class CodebookSAE(_CodebookMixin, SAE[CodebookSAEConfig]):
    """Inference codebook autoencoder."""


class CodebookTrainingSAE(_CodebookMixin, TrainingSAE[CodebookTrainingSAEConfig]):
    """Training codebook autoencoder with the VQ-VAE loss and dead-code bookkeeping."""

    steps_since_used: Tensor

    def __init__(self, cfg: CodebookTrainingSAEConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)
        # Persistent so that a training checkpoint resumes with the same dead codes; not in the saved dictionary.
        self.register_buffer("steps_since_used", torch.zeros(cfg.d_sae, dtype=torch.long, device=self.W_dec.device))

    def get_coefficients(self) -> dict[str, float]:
        return {}

    def calculate_aux_loss(self, step_input, feature_acts, hidden_pre, sae_out) -> dict[str, Tensor]:
        return {}

    def encode_with_hidden_pre(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Codes as 1/k indicators, and the cosine scores [.., d_sae] as the pre-activations."""
        h, _, _, lead = self._normalized_input(x)
        scores = h @ self.W_enc
        return self.encode(x), scores.reshape(*lead, self.cfg.d_sae)

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        with full_precision(step_input.sae_in.device):
            return self._training_forward(step_input.sae_in.to(self.dtype))

    def _training_forward(self, x: Tensor) -> TrainStepOutput:
        h, mu, sigma = layer_norm_with_stats(x)
        ids = self.code_ids(h)
        pairs = pairs_from_topk(ids, self.cfg.d_sae)
        weights = torch.full((ids.numel(),), 1.0 / self.cfg.k, dtype=h.dtype, device=h.device)
        q = sparse_decode(weights, self.W_dec, pairs)  # mean of the chosen codes, [N, d_in]
        codebook_loss = (q - h.detach()).pow(2).sum(dim=-1).mean()
        commitment_loss = self.cfg.beta * (h - q.detach()).pow(2).sum(dim=-1).mean()
        fired = torch.bincount(ids.reshape(-1), minlength=self.cfg.d_sae) > 0
        codes = torch.sparse_coo_tensor(torch.stack([pairs.rows, pairs.cols]), weights, (x.shape[0], self.cfg.d_sae),
                                        check_invariants=False)
        return TrainStepOutput(
            sae_in=x, sae_out=(q * sigma + mu), feature_acts=codes, hidden_pre=codes,
            loss=codebook_loss + commitment_loss,
            losses={"mse_loss": codebook_loss, "commitment_loss": commitment_loss},
            metrics={"fired": fired, "l0": torch.tensor(float(self.cfg.k))})

    @torch.no_grad()
    def record_usage(self, fired: Tensor) -> None:
        self.steps_since_used += 1
        self.steps_since_used[fired.to(self.steps_since_used.device)] = 0

    @torch.no_grad()
    def after_step(self, batch: Tensor, fired: Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Upkeep after each optimizer step (train_step): usage tracking, and dead codes reset to recent inputs
        with their optimizer moments zeroed."""
        self.record_usage(fired)
        if self.cfg.dead_code_steps > 0:
            reset = replace_dead_codes(self, batch, self.steps_since_used, self.cfg.dead_code_steps)
            if reset.numel():
                reset_optimizer_rows(optimizer, self.W_dec, reset)

    def init_from_sample(self, sample: Tensor) -> None:
        """Data-dependent initialisation (sae.dictionaries.init_from_sample): k-means codes."""
        # k-means costs rows x d_sae x d_in per iteration; 4 rows per code is plenty for a starting point.
        kmeans_init(self, sample[: max(4 * self.cfg.d_sae, 4096)])

    def process_state_dict_for_saving_inference(self, state_dict: dict[str, Any]) -> None:
        state_dict.pop("steps_since_used", None)
        super().process_state_dict_for_saving_inference(state_dict)


def codebook_code_ids(sae: _CodebookMixin, x: Tensor) -> Tensor:
    """LongTensor [N, k]: the codes chosen for x [..., d_in] (leading dims flattened), best first."""
    h = sae._normalized_input(x)[0]
    return sae.code_ids(h)


@torch.no_grad()
def kmeans_init(sae: _CodebookMixin, sample: Tensor, iters: int = 10) -> None:
    """Set the codes to k-means centroids of the LayerNorm'd sample rows (cosine assignment, as encode).

    Needs at least d_sae rows for distinct starting centroids; with fewer, centroids start from rows drawn
    with replacement plus noise. Empty clusters restart from a random row. Uses torch's global RNG.
    """
    h = layer_norm_with_stats(sample.reshape(-1, sae.cfg.d_in).to(sae.W_dec.device, sae.W_dec.dtype))[0]
    n, m = h.shape[0], sae.cfg.d_sae
    if n == 0:
        raise ValueError("k-means initialisation needs at least one sample row")
    if n >= m:
        centers = h[torch.randperm(n, device=h.device)[:m]].clone()
    else:
        centers = h[torch.randint(n, (m,), device=h.device)] + 0.1 * torch.randn(m, h.shape[1], device=h.device)
    for _ in range(iters):
        assign = _nearest(h, centers)
        counts = torch.bincount(assign, minlength=m)
        sums = torch.zeros_like(centers).index_add_(0, assign, h)
        empty = counts == 0
        centers = sums / counts.clamp(min=1)[:, None]
        centers[empty] = h[torch.randint(n, (int(empty.sum()),), device=h.device)]
    sae.W_dec.copy_(centers)


def _nearest(h: Tensor, centers: Tensor, chunk: int = 4096) -> Tensor:
    """Index of the centre with the highest cosine similarity to each row of h."""
    unit = F.normalize(centers, dim=-1)
    return torch.cat([(h[i:i + chunk] @ unit.T).argmax(dim=1) for i in range(0, h.shape[0], chunk)])


@torch.no_grad()
def replace_dead_codes(sae: _CodebookMixin, recent_inputs: Tensor, steps_since_used: Tensor,
                       threshold_steps: int) -> Tensor:
    """Reset codes unused for >= threshold_steps to random LayerNorm'd recent inputs plus noise.

    Returns the indices reset (their steps_since_used is set to 0). The noise std is
    cfg.dead_code_noise (0.1 where the config has none), so codes reset from the same input differ.
    """
    if threshold_steps <= 0:
        raise ValueError(f"threshold_steps must be positive (got {threshold_steps})")
    dead = torch.nonzero(steps_since_used >= threshold_steps).squeeze(1)
    if dead.numel() == 0:
        return dead
    h = layer_norm_with_stats(recent_inputs.reshape(-1, sae.cfg.d_in).to(sae.W_dec.device, sae.W_dec.dtype))[0]
    pick = torch.randint(h.shape[0], (dead.numel(),), device=h.device)
    noise = getattr(sae.cfg, "dead_code_noise", 0.1)
    sae.W_dec[dead.to(sae.W_dec.device)] = h[pick] + noise * torch.randn_like(h[pick])
    steps_since_used[dead] = 0
    return dead


CODEBOOK = Architecture(
    "codebook", CodebookTrainingSAE, CodebookTrainingSAEConfig, CodebookSAE, CodebookSAEConfig,
    saelens_names=("sparsescope_codebook",), default_k=8, k_meaning="codes per token",
    # The codes keep their N(0, 1) init in LayerNorm space (no decoder-norm rescaling); b_dec is unused.
    config_fields={"decoder_init_norm": None, "apply_b_dec_to_input": False}, has_codes=True, tied=True)
