"""Ablating heads on a prompt with TransformerLens hooks on `blocks.L.attn.hook_z` (a head's output before W_O).

Modes:
- zero: the head's z is set to 0 at every position; every later layer sees the change.
- mean: z is set to the head's mean z over corpus tokens (position-independent mean, from the head scan).
- path: only the head's direct path to the logits is removed: its contribution z_h @ W_O[h] is subtracted
  from the final residual stream (blocks.{last}.hook_resid_post), while every later layer still reads the
  clean head output. ln_final is recomputed on the patched residual (its scale is not frozen), as in
  TransformerLens path patching to the logits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from analysis.heads.prompt import check_head, prompt_tokens, token_strings
from store.errors import InputError

AblationMode = Literal["zero", "mean", "path"]
MODES: tuple[str, ...] = ("zero", "mean", "path")


@dataclass(frozen=True)
class Prediction:
    token_id: int
    token: str
    prob_clean: float
    prob_ablated: float


@dataclass(frozen=True)
class Ablation:
    layer: int
    head: int
    mode: str
    tokens: list[str]
    loss_clean: float | None
    """Mean next-token loss over the prompt (None for a one-token prompt)."""
    loss_ablated: float | None
    top_clean: list[Prediction]
    """The clean model's top next-token predictions after the last token, with both probabilities."""
    top_ablated: list[Prediction]
    """The ablated model's top next-token predictions, with both probabilities."""


def _next_token_loss(logits: Float[Tensor, "batch pos vocab"], tokens: Int[Tensor, "1 pos"]) -> float | None:
    if tokens.shape[1] < 2:
        return None
    logprobs = logits[0, :-1].log_softmax(-1)
    return float(-logprobs.gather(-1, tokens[0, 1:, None]).mean())


def head_mean(mean_z: np.ndarray | Tensor | None, layer: int, head: int, model) -> Tensor:
    if mean_z is None:
        raise InputError("mean ablation needs the heads' mean outputs: run `sparsescope heads` on a corpus first")
    means = torch.as_tensor(np.asarray(mean_z), dtype=torch.float32)
    expected = (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head)
    if tuple(means.shape) != expected:
        raise InputError(f"head means have shape {tuple(means.shape)}, expected {expected}")
    return means[layer, head].to(model.cfg.device)


def _ablation_hooks(model, layer: int, head: int, mode: str, mean: Tensor | None) -> list:
    z_name = f"blocks.{layer}.attn.hook_z"
    if mode in ("zero", "mean"):
        def replace(z, hook):  # z: (batch, pos, head, d_head)
            z[:, :, head] = 0.0 if mode == "zero" else mean
            return z
        return [(z_name, replace)]
    seen: dict[str, Tensor] = {}

    def record(z, hook):
        seen["z"] = z[:, :, head].clone()  # (batch, pos, d_head)

    def remove_direct(resid, hook):  # resid: (batch, pos, d_model)
        return resid - seen["z"] @ model.W_O[layer, head]
    return [(z_name, record), (f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", remove_direct)]


def _predictions(model, order: Tensor, clean: Tensor, ablated: Tensor) -> list[Prediction]:
    return [Prediction(int(t), model.to_single_str_token(int(t)), float(clean[t]), float(ablated[t]))
            for t in order]


def ablate_head(model, prompt: str, layer: int, head: int, mode: AblationMode = "zero",
                mean_z: np.ndarray | Tensor | None = None, top_k: int = 10) -> Ablation:
    """Loss and next-token predictions of `prompt` with head (layer, head) ablated by `mode` (see module doc).

    mean_z: [n_layers, n_heads, d_head] mean head outputs (store.heads.head_means via means_array); mode mean.
    """
    check_head(model, layer, head)
    if mode not in MODES:
        raise InputError(f"unknown ablation mode {mode!r} (use one of {', '.join(MODES)})")
    tokens = prompt_tokens(model, prompt).to(model.cfg.device)
    mean = head_mean(mean_z, layer, head, model) if mode == "mean" else None
    with torch.inference_mode():
        clean = model(tokens)
        ablated = model.run_with_hooks(tokens, fwd_hooks=_ablation_hooks(model, layer, head, mode, mean))
    p_clean, p_ablated = clean[0, -1].softmax(-1), ablated[0, -1].softmax(-1)
    k = min(top_k, p_clean.shape[-1])
    return Ablation(layer=layer, head=head, mode=mode, tokens=token_strings(model, tokens),
                    loss_clean=_next_token_loss(clean, tokens), loss_ablated=_next_token_loss(ablated, tokens),
                    top_clean=_predictions(model, p_clean.topk(k).indices, p_clean, p_ablated),
                    top_ablated=_predictions(model, p_ablated.topk(k).indices, p_clean, p_ablated))


def means_array(model, means: dict[tuple[int, int], list[float]]) -> np.ndarray | None:
    """store.heads.head_means rows as a [n_layers, n_heads, d_head] array (None if incomplete)."""
    shape = (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head)
    if len(means) != shape[0] * shape[1]:
        return None
    out = np.zeros(shape, dtype=np.float32)
    for (layer, head), values in means.items():
        if layer >= shape[0] or head >= shape[1] or len(values) != shape[2]:
            return None
        out[layer, head] = values
    return out


def mean_head_outputs(model, tokens: Int[Tensor, "n pos"], batch: int = 8) -> np.ndarray:
    """[n_layers, n_heads, d_head] mean hook_z over `tokens` (when no head scan is stored)."""
    total = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head, dtype=torch.float64)

    def add(z, hook):
        total[hook.layer()] += z.sum((0, 1)).double().cpu()
    hooks = [(f"blocks.{layer}.attn.hook_z", add) for layer in range(model.cfg.n_layers)]
    with torch.inference_mode():
        for lo in range(0, len(tokens), batch):
            model.run_with_hooks(tokens[lo:lo + batch].to(model.cfg.device), fwd_hooks=hooks,
                                 stop_at_layer=model.cfg.n_layers)
    return (total / max(tokens.numel(), 1)).float().numpy()

