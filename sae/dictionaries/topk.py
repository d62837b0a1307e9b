"""TopK SAE (Gao et al. 2024) with AuxK, trained with sparse kernels; saved as SAELens' own `topk`.

Same numbers as SAELens' TopKTrainingSAE on the same weights and batch (tests/unit/dictionaries/test_topk.py),
but only the encoder's forward matmul is dense: the decoder, its backward and the encoder's backward run over
the k chosen features (sparse_ops). SAELens' own `use_sparse_activations` only makes the decoder forward
sparse; its backward stays dense, and on CPU it is slower than the dense default.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from sae_lens.saes.sae import SAEConfig, TrainStepInput, TrainStepOutput
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
from torch import Tensor

from sae.dictionaries.registry import Architecture
from sae.dictionaries.sparse_ops import Pairs, full_precision, gather_encode, pairs_from_topk, sparse_decode


@dataclass
class SparseTopKTrainingSAEConfig(TopKTrainingSAEConfig):
    """TopKTrainingSAEConfig plus the dead-feature window that SAELens keeps in its trainer."""

    aux_loss_coefficient: float = 1 / 32
    """AuxK loss weight; 1/32 as in Gao et al. 2024 (SAELens defaults to 1)."""
    dead_feature_window: int = 1000
    """Training steps without firing after which a feature counts as dead for the AuxK loss."""

    @classmethod
    def architecture(cls) -> str:
        return "sparsescope_topk"

    def get_inference_config_class(self) -> type[SAEConfig]:
        return TopKSAEConfig


class SparseTopKMixin:
    """Sparse training forward pass shared by the TopK and BatchTopK training SAEs."""

    steps_since_fired: Tensor

    def _init_firing(self) -> None:
        # Persistent so that a training checkpoint resumes with the same dead-feature mask; dropped from the
        # inference weights in process_state_dict_for_saving_inference.
        self.register_buffer("steps_since_fired", torch.zeros(self.cfg.d_sae, dtype=torch.long,
                                                              device=self.W_dec.device))

    def dead_neuron_mask(self) -> Tensor:
        """Features that have not fired for more than cfg.dead_feature_window steps."""
        return self.steps_since_fired > self.cfg.dead_feature_window

    @torch.no_grad()
    def record_firing(self, fired: Tensor) -> None:
        self.steps_since_fired += 1
        self.steps_since_fired[fired.to(self.steps_since_fired.device)] = 0

    def after_step(self, batch: Tensor, fired: Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Upkeep after each optimizer step (train_step): the firing history behind the AuxK dead mask."""
        self.record_firing(fired)

    def process_state_dict_for_saving_inference(self, state_dict: dict[str, Any]) -> None:
        state_dict.pop("steps_since_fired", None)
        super().process_state_dict_for_saving_inference(state_dict)

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        if not self._sparse_path_applies():
            return super().training_forward_pass(step_input)
        output, hidden = self._sparse_training_forward(step_input)
        self._after_sparse_forward(hidden)
        return output

    def _after_sparse_forward(self, hidden: Tensor) -> None:
        """Hook for per-step state that depends on the chosen pre-activations (BatchTopK's threshold)."""

    def _select(self, pre: Tensor) -> tuple[Tensor, Pairs]:
        raise NotImplementedError

    def _sparse_path_applies(self) -> bool:
        # Hooks on the SAE need the dense activations, and input normalisation changes the loss; both
        # fall back to SAELens' dense pass.
        hooked = any(h._forward_hooks or h._backward_hooks for h in self.hook_dict.values())
        return self.cfg.normalize_activations == "none" and not hooked

    def _sparse_training_forward(self, step_input: TrainStepInput) -> tuple[TrainStepOutput, Tensor]:
        x = step_input.sae_in.to(self.dtype)
        b_dec = self.b_dec if self.cfg.apply_b_dec_to_input else None
        rescale = self.cfg.rescale_acts_by_decoder_norm
        scale = self.W_dec.norm(dim=-1) if rescale else None
        with torch.no_grad():
            # The one dense matmul; under autocast (GPU) it runs in bf16, everything after it in float32.
            pre = self._dense_pre(x if b_dec is None else x - b_dec)  # [N, d_sae]
            if rescale:
                pre.mul_(scale)
            values, pairs = self._select(pre)
        with full_precision(x.device):
            return self._sparse_losses(x, pre, values, pairs, b_dec, scale, step_input.dead_neuron_mask)

    def _dense_pre(self, sae_in: Tensor) -> Tensor:
        """sae_in @ W_enc + b_enc in float32; on CPU written into a buffer kept between steps.

        A fresh [N, d_sae] tensor costs a page fault per 4 kB on every step (~0.1 s at N=4096, d_sae=4608)
        and addmm first copies the broadcast bias into it; reusing one buffer avoids both. Nothing keeps a
        reference to it past the step.
        """
        if sae_in.device.type != "cpu" or torch.is_autocast_enabled("cpu") or sae_in.dtype != torch.float32:
            return torch.addmm(self.b_enc, sae_in, self.W_enc).float()  # bf16 matmul under GPU autocast
        shape = (sae_in.shape[0], self.cfg.d_sae)
        buffer = self.__dict__.get("_pre_buffer")
        if buffer is None or buffer.shape != shape:
            buffer = sae_in.new_empty(shape)
            self.__dict__["_pre_buffer"] = buffer
        return torch.mm(sae_in, self.W_enc, out=buffer).add_(self.b_enc)

    def _sparse_losses(self, x: Tensor, pre: Tensor, values: Tensor, pairs: Pairs, b_dec: Tensor | None,
                       scale: Tensor | None, dead: Tensor | None) -> tuple[TrainStepOutput, Tensor]:
        rescale = scale is not None
        hidden = gather_encode(values, x, b_dec, self.W_enc, self.b_enc, scale, pairs)
        acts = hidden.relu()
        coef = acts * (1 / scale)[pairs.cols] if rescale else acts
        sae_out = sparse_decode(coef, self.W_dec, pairs) + self.b_dec
        mse_loss = self.mse_loss_fn(sae_out, x).sum(dim=-1).mean()
        aux_loss = self._sparse_aux_loss(pre, x, sae_out, dead, b_dec, scale)
        losses = {"mse_loss": mse_loss, "auxiliary_reconstruction_loss": aux_loss}
        fired = acts.detach() > 0
        feature_acts = _coo(pairs, acts.detach(), x.shape[0], self.cfg.d_sae)
        metrics = {"fired": torch.bincount(pairs.cols[fired], minlength=self.cfg.d_sae) > 0,
                   "l0": fired.sum() / x.shape[0]}
        output = TrainStepOutput(sae_in=x, sae_out=sae_out, feature_acts=feature_acts,
                                 hidden_pre=_coo(pairs, hidden.detach(), x.shape[0], self.cfg.d_sae),
                                 loss=mse_loss + aux_loss, losses=losses, metrics=metrics)
        return output, hidden

    def _sparse_aux_loss(self, pre: Tensor, x: Tensor, sae_out: Tensor, dead: Tensor | None,
                         b_dec: Tensor | None, scale: Tensor | None) -> Tensor:
        """SAELens' calculate_topk_aux_loss over the sparse kernels (k_aux = d_in / 2, Appendix B.1)."""
        if dead is None or (num_dead := int(dead.sum())) == 0:
            return sae_out.new_tensor(0.0)
        k_aux = x.shape[-1] // 2
        weight = min(num_dead / k_aux, 1.0)
        k_aux = min(k_aux, num_dead)
        with torch.no_grad():
            pre.masked_fill_(~dead, float("-inf"))  # the main selection is done; reuse the buffer
            values, indices = pre.topk(k_aux, dim=-1, sorted=False)
            pairs = pairs_from_topk(indices, self.cfg.d_sae)
        hidden = gather_encode(values.reshape(-1), x, b_dec, self.W_enc, self.b_enc, scale, pairs)
        coef = hidden * (1 / scale)[pairs.cols] if scale is not None else hidden
        recons = sparse_decode(coef, self.W_dec, pairs)
        residual = (x - sae_out).detach()
        return self.cfg.aux_loss_coefficient * weight * (recons - residual).pow(2).sum(dim=-1).mean()


def _coo(pairs: Pairs, values: Tensor, n: int, d_sae: int) -> Tensor:
    """The code as a sparse COO tensor: what SAELens' trainer and loggers accept without densifying."""
    indices = torch.stack([pairs.rows, pairs.cols])
    return torch.sparse_coo_tensor(indices, values, (n, d_sae), check_invariants=False)


class SparseTopKTrainingSAE(SparseTopKMixin, TopKTrainingSAE):
    """SAELens' TopKTrainingSAE with a sparse training forward and backward pass."""

    cfg: SparseTopKTrainingSAEConfig  # type: ignore[assignment]

    def __init__(self, cfg: SparseTopKTrainingSAEConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)
        self._init_firing()

    def _select(self, pre: Tensor) -> tuple[Tensor, Pairs]:
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return values.reshape(-1), pairs_from_topk(indices, self.cfg.d_sae)


TOPK = Architecture(
    "topk", SparseTopKTrainingSAE, SparseTopKTrainingSAEConfig, TopKSAE, TopKSAEConfig,
    saelens_names=("sparsescope_topk", "topk"), default_k=32, k_meaning="active features per token")
