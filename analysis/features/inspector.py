"""Read a prompt through the dictionaries of one site: which features fire on each token, and how strongly.

The model runs once, just far enough to reach the hook; every dictionary on that hook then encodes the same
activations. Only the strongest N_TOP features of each token are kept, which is what the prompt inspector shows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from store.errors import InputError

N_TOP = 10
"""Features kept per token and dictionary."""
MAX_CHARS = 4000
"""Longest prompt accepted (characters); the tokens are further cut to the model's context."""


@dataclass(frozen=True)
class Reading:
    """One dictionary's strongest features on every token of the prompt."""

    ids: np.ndarray
    """[T, n_top] feature ids, strongest first (-1 where fewer features fire)."""
    acts: np.ndarray
    """[T, n_top] their activations (0 where the id is -1)."""

    def strongest(self) -> tuple[np.ndarray, np.ndarray]:
        """([T] strongest feature of each token (-1: none fires), [T] its activation)."""
        return self.ids[:, 0], self.acts[:, 0]


@dataclass(frozen=True)
class Inspection:
    model: str
    hook: str
    token_ids: list[int]
    tokens: list[str]
    """Text of each token, as the tokenizer decodes it alone."""
    readings: dict[str, Reading] = field(default_factory=dict)
    """Dictionary name -> its reading."""
    truncated: bool = False
    """True when the prompt was longer than the model's context and its tail was cut."""
    has_bos: bool = False
    """True when the first token is a BOS the model prepended (an attention sink, not part of the text)."""


def check_prompt(text: str, what: str = "the prompt") -> str:
    """`text` if it is something to read: not blank, encodable, at most MAX_CHARS characters; else InputError."""
    from sae.models import check_text

    if not text.strip():
        raise InputError(f"{what} is empty: type some text")
    check_text(text, what)
    if len(text) > MAX_CHARS:
        raise InputError(f"{what} has {len(text):,} characters; at most {MAX_CHARS:,} are read")
    return text


@torch.no_grad()
def prompt_activations(model, hooks: Sequence[str], text: str) -> tuple[torch.Tensor, dict[str, torch.Tensor], bool]:
    """(token ids [T], hook -> activations [T, d] flattened per token (hook_z head-major), truncated) from ONE
    forward pass that stops after the deepest of `hooks`."""
    from sae.models import stop_layer

    check_prompt(text)
    stops = [stop_layer(model, hook) for hook in hooks]  # also rejects a hook the model does not have
    stop = None if None in stops else max(stops)  # None: some hook needs the whole model
    tokens = model.to_tokens(text, truncate=False)[0]  # (T,), with BOS when the model's convention has one
    truncated = len(tokens) > model.cfg.n_ctx
    tokens = tokens[: model.cfg.n_ctx]
    _, cache = model.run_with_cache(tokens[None], names_filter=list(hooks), stop_at_layer=stop)
    acts = {hook: cache[hook][0] for hook in hooks}  # (T, d) or (T, n_heads, d_head) for hook_z
    return tokens.cpu(), {hook: a.reshape(a.shape[0], -1).float() for hook, a in acts.items()}, truncated


def site_activations(model, hook: str, text: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(token ids [T], activations at `hook` [T, d] flattened per token (hook_z head-major), truncated)."""
    tokens, acts, truncated = prompt_activations(model, [hook], text)
    return tokens, acts[hook], truncated


@torch.no_grad()
def encode_rows(sae, acts: torch.Tensor) -> torch.Tensor:
    """[T, d_sae] feature activations of `sae` on acts [T, d_in], as the analysis reads them (the architecture's
    own `feature_activations`: a codebook's chosen codes, an MP dictionary's pursuit), on the dictionary's device."""
    from sae.dictionaries import feature_activations

    if acts.shape[-1] != sae.cfg.d_in:
        raise InputError(f"the dictionary reads d_in={sae.cfg.d_in}, the hook gives d={acts.shape[-1]}")
    device = next(sae.parameters()).device
    return feature_activations(sae, acts.to(device)).float()


@torch.no_grad()
def read_dictionary(sae, acts: torch.Tensor, n_top: int = N_TOP) -> Reading:
    """The n_top strongest features of `sae` on each row of acts [T, d_in]."""
    feature_acts = encode_rows(sae, acts)  # (T, d_sae)
    n = min(n_top, sae.cfg.d_sae)
    values, ids = feature_acts.topk(n, dim=1)
    ids = torch.where(values > 0, ids, torch.full_like(ids, -1))
    values = torch.where(values > 0, values, torch.zeros_like(values))
    return Reading(ids.cpu().numpy().astype(np.int64), values.cpu().numpy().astype(np.float64))


def inspect_prompt(model, hook: str, text: str, dictionaries: Mapping[str, object],
                   n_top: int = N_TOP) -> Inspection:
    """Run `model` on `text` up to `hook` and read the activations with every dictionary given (name -> SAE)."""
    token_ids, acts, truncated = site_activations(model, hook, text)
    tokens = [model.tokenizer.decode([t]) for t in token_ids.tolist()]
    readings = {name: read_dictionary(sae, acts, n_top) for name, sae in dictionaries.items()}
    return Inspection(model.cfg.model_name, hook, token_ids.tolist(), tokens, readings, truncated,
                      starts_with_bos(model, token_ids))


def starts_with_bos(model, token_ids: torch.Tensor) -> bool:
    """The first token is a BOS the model prepended (an attention sink, not part of the text)."""
    return bool(model.cfg.default_prepend_bos) and token_ids[0].item() == model.tokenizer.bos_token_id


def trace_prompt(model, hook: str, text: str, sae) -> list:
    """The pursuit trace (analysis.features.pursuit.PursuitTrace) of every token of `text` by MP dictionary `sae`."""
    from analysis.features.pursuit import pursuit_traces

    _, acts, _ = site_activations(model, hook, text)
    return pursuit_traces(sae, acts)
