"""Neuron dictionaries: an MLP layer's neurons as features, so they get what every dictionary gets.

A neuron dictionary reads `blocks.L.mlp.hook_post` (the MLP's hidden activations, d_in = d_sae = d_mlp):

    encode(x) = x            feature i is neuron i, with its signed activation (SwiGLU neurons go both ways)
    decode(f) = f            the identity in the hook's space, so a splice or a clamp at hook_post edits neuron i
                             and nothing else (W_dec = I: decode(e_i) - decode(0) = e_i)
    mlp_out(f) = f @ W_out + b_out      the layer's output: what the neurons write to the residual stream

`W_out` [d_mlp, d_model] and `b_out` [d_model] are the layer's output weights, saved with the dictionary: W_out[i]
is neuron i's direction in the residual stream, which analysis reads through the final norm's weight and the
unembedding for its logit effects (analysis.features.analyze.residual_directions maps any hook_post dictionary
through the model's W_out: the same numbers). b_out belongs to no neuron (it is the output when every neuron is
0), so it is left out of logit effects, as the final norm's bias is. The identity W_dec is not saved: it is
rebuilt on loading, so a saved dictionary is W_out, b_out and a zero b_dec.

Nothing is trained: `neuron_dictionary(model, layer)` builds one from a model's weights
(`sparsescope neurons add`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from sae_lens.saes.sae import SAE, SAEConfig, SAEMetadata
from torch import Tensor, nn

from sae.dictionaries.registry import Architecture
from store.errors import InputError

HOOK = "blocks.{L}.mlp.hook_post"
"""Where a neuron dictionary of layer L reads (and steering edits)."""


@dataclass
class NeuronsSAEConfig(SAEConfig):
    """d_in = d_sae = d_mlp; d_model is the width of the layer's output (W_out's columns)."""

    d_model: int = 0
    """Width of the residual stream the neurons write to (W_out: [d_mlp, d_model])."""
    apply_b_dec_to_input: bool = False

    @classmethod
    def architecture(cls) -> str:
        return "sparsescope_neurons"

    def __post_init__(self):
        super().__post_init__()
        if self.d_in != self.d_sae:
            raise ValueError(f"a neuron dictionary has one feature per neuron (d_in {self.d_in} != d_sae "
                             f"{self.d_sae})")


class NeuronsSAE(SAE[NeuronsSAEConfig]):
    """The identity dictionary over an MLP layer's hidden activations, with the layer's output weights."""

    def initialize_weights(self) -> None:
        d, dev = self.cfg.d_in, self.device
        self.b_dec = nn.Parameter(torch.zeros(d, dtype=self.dtype, device=dev))
        self.W_dec = nn.Parameter(torch.eye(d, dtype=self.dtype, device=dev), requires_grad=False)
        self.W_out = nn.Parameter(torch.zeros(d, self.cfg.d_model, dtype=self.dtype, device=dev))
        self.b_out = nn.Parameter(torch.zeros(self.cfg.d_model, dtype=self.dtype, device=dev))

    def encode(self, x: Tensor) -> Tensor:
        acts = self.process_sae_in(x)  # the dtype and hook_sae_input; b_dec is not subtracted
        return self.hook_sae_acts_post(self.hook_sae_acts_pre(acts))

    def decode(self, feature_acts: Tensor) -> Tensor:
        # f @ I + b_dec, without the [d_mlp, d_mlp] matmul: bit for bit the hidden activations back
        return self.hook_sae_recons(feature_acts.to(self.dtype) + self.b_dec)

    def mlp_out(self, feature_acts: Tensor) -> Tensor:
        """What the layer writes to the residual stream (hook_mlp_out) for these neuron activations."""
        return feature_acts.to(self.dtype) @ self.W_out + self.b_out

    def process_state_dict_for_saving(self, state_dict: dict[str, Any]) -> None:
        state_dict.pop("W_dec", None)  # the identity: rebuilt on loading

    def process_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:
        if "W_dec" not in state_dict:
            like = state_dict["b_dec"]
            state_dict["W_dec"] = torch.eye(self.cfg.d_in, dtype=like.dtype, device=like.device)


def neuron_layer(model, layer: int) -> int:
    """`layer` if `model` has an MLP there; InputError otherwise."""
    n_layers = model.cfg.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise InputError(f"layer {layer!r} is out of range: {model.cfg.model_name} has layers 0..{n_layers - 1}")
    if getattr(model.cfg, "attn_only", False):
        raise InputError(f"{model.cfg.model_name} has no MLP layers")
    return layer


@torch.no_grad()
def neuron_dictionary(model, layer: int) -> NeuronsSAE:
    """The neuron dictionary of `model`'s MLP at `layer` (float32, on the CPU)."""
    neuron_layer(model, layer)
    mlp = model.blocks[layer].mlp
    W_out = mlp.W_out.detach().float().cpu()  # [d_mlp, d_model]
    d_mlp, d_model = W_out.shape
    cfg = NeuronsSAEConfig(d_in=d_mlp, d_sae=d_mlp, d_model=d_model, metadata=SAEMetadata(
        model_name=model.cfg.model_name, hook_name=HOOK.format(L=layer)))
    sae = NeuronsSAE(cfg)
    sae.W_out.copy_(W_out)
    sae.b_out.copy_(mlp.b_out.detach().float().cpu())
    return sae


NEURONS = Architecture(
    "neurons", inference_class=NeuronsSAE, inference_config=NeuronsSAEConfig, saelens_names=("sparsescope_neurons",),
    created_by="sparsescope neurons add")
