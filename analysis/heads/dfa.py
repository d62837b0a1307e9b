"""Attention-output dictionaries (site `blocks.L.attn.hook_z`, heads flattened head-major into d_in).

Head attribution of feature i: w_{i,h} = ||W_dec[i, h-block]|| / sum_h' ||W_dec[i, h'-block]|| (sums to 1).

Direct feature attribution (DFA) for a prompt and destination token d, per head h and source position s:
    DFA_{h,s}(i) = A_h[d, s] * (v_h[s] . W_enc[h-block, i])
Because z_h[d] = sum_s A_h[d, s] v_h[s] exactly (TransformerLens computes z = pattern @ v, b_V included in v),
    sum_{h,s} DFA_{h,s}(i) = z[d] . W_enc[:, i]
and the encoder pre-activation is pre_i = (z[d] - b_dec) . W_enc[:, i] + b_enc[i] when the dictionary
subtracts b_dec from its input (SAELens' apply_b_dec_to_input), else z[d] . W_enc[:, i] + b_enc[i].
"Minus its bias terms" means exactly: pre_i - bias_i with bias_i = b_enc[i] - b_dec . W_enc[:, i] (or b_enc[i]).
A `constant_norm_rescale` input scale c multiplies every DFA by c. For matching-pursuit and codebook
dictionaries this is the linear score of the first step / of the code match, not their final activation.
With grouped-query attention v_h is the value vector of head h's KV group (hook_v has n_kv_heads heads).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from jaxtyping import Float
from torch import Tensor

from analysis.heads.prompt import check_head, prompt_tokens, token_strings
from analysis.heads.scan import kv_group
from store.errors import InputError

_HOOK_Z = re.compile(r"^blocks\.(\d+)\.attn\.hook_z$")


def is_attention_hook(hook: str | None) -> bool:
    return bool(hook) and hook.endswith("attn.hook_z")


def dictionary_layer(sae, hook: str | None = None) -> int:
    """Layer of an attention-output dictionary, from `hook` or the dictionary's own metadata."""
    hook = hook or getattr(sae.cfg.metadata, "hook_name", None)
    match = _HOOK_Z.match(hook or "")
    if not match:
        raise InputError(f"dictionary hook {hook!r} is not an attention output (blocks.L.attn.hook_z)")
    return int(match.group(1))


def _check_width(sae, n_heads: int, d_head: int | None = None) -> int:
    d_in = sae.W_dec.shape[1]
    if d_in % n_heads or (d_head is not None and d_in != n_heads * d_head):
        raise InputError(f"dictionary d_in {d_in} is not n_heads x d_head ({n_heads} x {d_head or '?'})")
    return d_in // n_heads


def head_attribution(sae, n_heads: int) -> Float[Tensor, "d_sae n_heads"]:
    """Share of each feature's decoder norm in each head's block; rows sum to 1 (uniform for a zero row)."""
    d_head = _check_width(sae, n_heads)
    with torch.no_grad():
        norms = sae.W_dec.detach().float().reshape(-1, n_heads, d_head).norm(dim=-1)  # (d_sae, head)
        total = norms.sum(-1, keepdim=True)
        return torch.where(total > 0, norms / total.clamp_min(1e-30), torch.full_like(norms, 1.0 / n_heads)).cpu()


def feature_head_weights(sae, n_heads: int, feature: int) -> list[float]:
    if not 0 <= feature < sae.W_dec.shape[0]:
        raise InputError(f"feature {feature} is out of range (0..{sae.W_dec.shape[0] - 1})")
    return head_attribution(sae, n_heads)[feature].tolist()


def feature_heads_table(sae, n_heads: int) -> pa.Table:
    """Decoder-norm head attribution of every feature as rows (feature, head, weight). The store's feature_heads
    holds the measured split of the pre-activation instead (analysis.features.head_shares, written by analyze)."""
    weights = head_attribution(sae, n_heads).numpy()
    feature, head = np.meshgrid(np.arange(weights.shape[0]), np.arange(n_heads), indexing="ij")
    return pa.table({"feature": feature.ravel().astype(np.int32), "head": head.ravel().astype(np.int16),
                     "weight": weights.ravel().astype(np.float32)})


@dataclass(frozen=True)
class FeatureDFA:
    layer: int
    tokens: list[str]
    dest: int
    features: list[int]
    kv_groups: list[int]
    """KV group of each head."""
    dfa: np.ndarray
    """[feature, head, src] direct feature attribution; sums over (head, src) to z_term."""
    z_term: np.ndarray
    """[feature] input scale x z[dest] . W_enc[:, i]."""
    bias: np.ndarray
    """[feature] b_enc[i] - b_dec . W_enc[:, i] (b_enc 0 where there is none; b_dec only where applied)."""
    activation: np.ndarray
    """[feature] the dictionary's activation of z[dest]."""

    @property
    def pre_activation(self) -> np.ndarray:
        return self.z_term + self.bias


def _input_scale(sae, z_flat: Float[Tensor, " d_in"]) -> float:
    mode = getattr(sae.cfg, "normalize_activations", "none")
    if mode == "constant_norm_rescale":
        return float(z_flat.shape[-1] ** 0.5 / z_flat.norm().clamp_min(1e-12))
    if mode == "layer_norm":
        raise InputError("DFA needs an encoder that is linear in hook_z; this dictionary layer-normalises its input")
    return 1.0


def _encode(sae, z: Float[Tensor, "head d_head"]) -> Float[Tensor, " d_sae"]:
    # SAELens' hook_z reshaping mode expects (..., n_heads, d_head); otherwise the flat head-major vector.
    x = z[None] if getattr(sae, "hook_z_reshaping_mode", False) else z.reshape(1, -1)
    return sae.encode(x.to(sae.W_enc.dtype))[0].float()


def _run_layer(model, tokens, layer: int) -> tuple[Tensor, Tensor, Tensor]:
    names = [f"blocks.{layer}.attn.hook_{n}" for n in ("pattern", "v", "z")]
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names_filter=names, stop_at_layer=layer + 1)
    pattern, v, z = (cache[n][0].float() for n in names)  # (head, dest, src), (src, kv, d_head), (pos, head, d)
    if v.shape[1] != model.cfg.n_heads:  # GQA: query head h reads KV head h // group size
        v = v.repeat_interleave(model.cfg.n_heads // v.shape[1], dim=1)
    return pattern, v, z


def feature_dfa(model, sae, prompt: str, dest: int = -1, features: list[int] | None = None,
                hook: str | None = None, top: int = 8) -> FeatureDFA:
    """DFA per head and source position for `features` at token `dest` (default: the `top` most active)."""
    return tokens_dfa(model, sae, prompt_tokens(model, prompt), dest, features, hook, top)


def tokens_dfa(model, sae, tokens: Tensor, dest: int = -1, features: list[int] | None = None,
               hook: str | None = None, top: int = 8) -> FeatureDFA:
    """feature_dfa of token ids [1, pos] as given (a stored context: no BOS is added)."""
    layer = dictionary_layer(sae, hook)
    check_head(model, layer)
    n_heads, d_head = model.cfg.n_heads, model.cfg.d_head
    _check_width(sae, n_heads, d_head)
    if tokens.ndim != 2 or tokens.shape[0] != 1 or not 0 < tokens.shape[1] <= model.cfg.n_ctx:
        raise InputError(f"DFA reads one sequence of 1..{model.cfg.n_ctx} tokens, got shape {tuple(tokens.shape)}")
    tokens = tokens.to(model.cfg.device)
    if not -tokens.shape[1] <= dest < tokens.shape[1]:
        raise InputError(f"destination {dest} is outside the prompt's {tokens.shape[1]} tokens")
    dest %= tokens.shape[1]
    pattern, v, z = _run_layer(model, tokens, layer)
    with torch.inference_mode():
        acts = _encode(sae, z[dest])
        ids = _pick_features(sae, acts, features, top)
        w_enc = sae.W_enc.detach().float()[:, ids]  # (d_in, feature)
        scale = _input_scale(sae, z[dest].reshape(-1))
        per_src = torch.einsum("shd,hdf->fhs", v, w_enc.reshape(n_heads, d_head, -1))  # v_h[s] . W_enc[h-block]
        dfa = scale * pattern[:, dest][None] * per_src  # (feature, head, src)
        z_term = scale * (z[dest].reshape(-1) @ w_enc)
        b_enc = getattr(sae, "b_enc", None)  # matching-pursuit and codebook dictionaries have none
        bias = b_enc.detach().float()[ids] if b_enc is not None else torch.zeros(len(ids), device=w_enc.device)
        if getattr(sae.cfg, "apply_b_dec_to_input", False):
            bias = bias - sae.b_dec.detach().float() @ w_enc
    return FeatureDFA(layer=layer, tokens=token_strings(model, tokens), dest=dest, features=ids.tolist(),
                      kv_groups=[kv_group(model, h) for h in range(n_heads)], dfa=dfa.cpu().numpy(),
                      z_term=z_term.cpu().numpy(), bias=bias.cpu().numpy(), activation=acts[ids].cpu().numpy())


def _pick_features(sae, acts: Tensor, features: list[int] | None, top: int) -> Tensor:
    d_sae = sae.W_dec.shape[0]
    if features is not None:
        bad = [f for f in features if not 0 <= f < d_sae]
        if bad or not features:
            raise InputError(f"features must be in 0..{d_sae - 1} (got {features})")
        return torch.tensor(features, dtype=torch.long, device=acts.device)
    return acts.topk(min(top, d_sae)).indices
