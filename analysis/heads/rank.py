"""Which heads matter for this token: every head zero- (or mean-) ablated, ranked by the target logit change.

The clean run caches the residual stream entering every layer. For layer L the prompt's residual is copied
n_heads times and the model resumes at L (start_at_layer), copy h with head h ablated, so one batched
forward of the remaining layers covers all heads of a layer and the layers below L are never re-run.
Only the target position is unembedded.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from analysis.heads.ablation import head_mean
from analysis.heads.prompt import prompt_tokens, token_strings
from analysis.heads.scan import kv_group
from sae.models import single_token
from store.errors import InputError


@dataclass(frozen=True)
class HeadEffect:
    layer: int
    head: int
    kv_group: int
    logit_delta: float
    """Target logit with the head ablated minus the clean target logit (negative: the head supports it)."""
    prob_ablated: float


@dataclass(frozen=True)
class HeadRanking:
    tokens: list[str]
    position: int
    """Position whose next-token prediction is examined (>= 0)."""
    target_id: int
    target: str
    clean_logit: float
    clean_prob: float
    effects: list[HeadEffect]
    """Every head, largest |logit_delta| first."""


def target_id(model, target: str | int | None, clean_logits: Float[Tensor, " vocab"]) -> int:
    """The token to follow: an id, a string that is exactly one token, or (None) the clean top prediction."""
    if target is None or target == "":
        return int(clean_logits.argmax())
    if isinstance(target, int):
        if not 0 <= target < model.cfg.d_vocab:
            raise InputError(f"target token id {target} is outside the vocabulary (0..{model.cfg.d_vocab - 1})")
        return target
    return single_token(model, target, "target")


def _layer_effects(model, resid: Float[Tensor, "1 pos d_model"], layer: int, position: int,
                   fill: Float[Tensor, "head d_head"]) -> Float[Tensor, "head vocab"]:
    """Logits at `position` for n_heads copies of the run from `layer` on, copy h with head h replaced."""
    n_heads = model.cfg.n_heads
    heads = torch.arange(n_heads, device=resid.device)

    def replace(z, hook):  # z: (copy, pos, head, d_head); copy h gets head h replaced
        z[heads, :, heads] = fill[:, None, :]
        return z
    copies = resid.expand(n_heads, -1, -1).clone()  # (copy, pos, d_model)
    with model.hooks(fwd_hooks=[(f"blocks.{layer}.attn.hook_z", replace)]):
        final = model(copies, start_at_layer=layer, stop_at_layer=model.cfg.n_layers)
    return model.unembed(model.ln_final(final[:, position:position + 1]))[:, 0]


def rank_heads(model, prompt: str, target: str | int | None = None, position: int = -1,
               mean_z: np.ndarray | Tensor | None = None) -> HeadRanking:
    """Rank every head by how much ablating it (zero; mean if `mean_z` is given) moves the target logit."""
    tokens = prompt_tokens(model, prompt).to(model.cfg.device)
    pos = tokens.shape[1]
    if not -pos <= position < pos:
        raise InputError(f"position {position} is outside the prompt's {pos} tokens")
    position %= pos
    with torch.inference_mode():
        logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_resid_pre"))
        clean = logits[0, position]
        tid = target_id(model, target, clean)
        effects = []
        for layer in range(model.cfg.n_layers):
            fill = (torch.stack([head_mean(mean_z, layer, h, model) for h in range(model.cfg.n_heads)])
                    if mean_z is not None else
                    torch.zeros(model.cfg.n_heads, model.cfg.d_head, device=tokens.device))
            ablated = _layer_effects(model, cache[f"blocks.{layer}.hook_resid_pre"], layer, position, fill)
            probs = ablated.softmax(-1)[:, tid]
            effects += [HeadEffect(layer, h, kv_group(model, h), float(ablated[h, tid] - clean[tid]), float(probs[h]))
                        for h in range(model.cfg.n_heads)]
    effects.sort(key=lambda e: -abs(e.logit_delta))
    return HeadRanking(tokens=token_strings(model, tokens), position=position, target_id=tid,
                       target=model.to_single_str_token(tid), clean_logit=float(clean[tid]),
                       clean_prob=float(clean.softmax(-1)[tid]), effects=effects)
