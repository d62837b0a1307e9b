"""One head on one prompt: input checks shared by every prompt-level function, and the attention pattern."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from analysis.heads.scan import kv_group
from sae.models import prompt_tokens  # noqa: F401 - the heads' prompt check, from here as before
from store.errors import InputError


def check_head(model, layer: int, head: int | None = None) -> None:
    """Raise InputError unless `layer` (and `head`, if given) exist in `model`."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if not 0 <= layer < n_layers:
        raise InputError(f"layer {layer} is out of range: {model.cfg.model_name} has layers 0..{n_layers - 1}")
    if head is not None and not 0 <= head < n_heads:
        raise InputError(f"head {head} is out of range: {model.cfg.model_name} has heads 0..{n_heads - 1} "
                         "per layer")


def token_strings(model, tokens: Int[Tensor, "1 pos"]) -> list[str]:
    return list(model.to_str_tokens(tokens[0]))


@dataclass(frozen=True)
class HeadPattern:
    layer: int
    head: int
    kv_group: int
    tokens: list[str]
    """Token strings of the prompt, one per position."""
    pattern: np.ndarray
    """[dest, src] attention weights (rows sum to 1; zero above the diagonal)."""


def head_pattern(model, prompt: str, layer: int, head: int) -> HeadPattern:
    """Attention pattern of head (layer, head) on `prompt`."""
    check_head(model, layer, head)
    tokens = prompt_tokens(model, prompt)
    hook = f"blocks.{layer}.attn.hook_pattern"
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=hook, stop_at_layer=layer + 1)
    pattern = cache[hook][0, head].float().cpu().numpy()  # (dest, src)
    return HeadPattern(layer, head, kv_group(model, head), token_strings(model, tokens), pattern)


def pattern_on_tokens(model, token_ids: list[int], layer: int, head: int) -> np.ndarray:
    """[dest, src] pattern of a head on stored corpus tokens (a top-attending context, say)."""
    check_head(model, layer, head)
    if not token_ids or len(token_ids) > model.cfg.n_ctx:
        raise InputError(f"need 1..{model.cfg.n_ctx} tokens, got {len(token_ids)}")
    hook = f"blocks.{layer}.attn.hook_pattern"
    tokens = torch.tensor([token_ids], dtype=torch.long, device=model.cfg.device)
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names_filter=hook, stop_at_layer=layer + 1)
    return cache[hook][0, head].float().cpu().numpy()


def top_sources(pattern: np.ndarray, k: int = 3) -> list[list[tuple[int, float]]]:
    """For each destination, its k strongest sources as (src, weight), strongest first (compact view)."""
    k = min(k, pattern.shape[1])
    order = np.argsort(-pattern, axis=1, kind="stable")[:, :k]
    return [[(int(s), float(pattern[d, s])) for s in order[d] if s <= d] for d in range(pattern.shape[0])]
