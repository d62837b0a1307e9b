"""Activation patching: which head outputs and residual-stream positions carry the difference between two prompts.

A clean and a corrupted prompt of the same length differ in a few tokens; the metric is the logit difference of
two answer tokens at the last position, normalised so that the clean run scores 1 and the corrupted run 0. Each
cell of a heatmap runs the corrupted prompt with one activation replaced by its value on the clean prompt
(TransformerLens' `patching` utilities): 1 means that activation alone restores the clean behaviour.

    from analysis.heads.patching import activation_patching
    clean, corrupted = "When Mary and John went out, John gave it to", "When Mary and John went out, Mary gave it to"
    result = activation_patching(model, clean, corrupted, answer=" Mary", wrong=" John")
    result.heads  # [n_layers, n_heads]
    result.resid  # [n_layers, pos]

The forward passes add their hooks through TransformerLens' run_with_hooks, which removes them when it returns or
raises.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from analysis.heads.prompt import prompt_tokens, token_strings
from store.errors import InputError


@dataclass(frozen=True)
class PatchingResult:
    clean_tokens: list[str]
    corrupted_tokens: list[str]
    answer_id: int
    wrong_id: int
    clean_diff: float
    """logit[answer] - logit[wrong] at the last position of the clean prompt."""
    corrupted_diff: float
    """The same on the corrupted prompt."""
    heads: np.ndarray
    """[n_layers, n_heads] normalised metric with one head's output (hook_z, every position) patched in."""
    resid: np.ndarray
    """[n_layers, pos] normalised metric with the residual stream entering one layer at one position patched in."""


def answer_id(model, text: str, what: str = "answer") -> int:
    """The id of `text` as one token (no BOS), or InputError saying how it splits."""
    if not text:
        raise InputError(f"the {what} token is empty")
    ids = model.to_tokens(text, prepend_bos=False, truncate=False)[0]
    if len(ids) != 1:
        pieces = ", ".join(repr(t) for t in model.to_str_tokens(ids))
        raise InputError(f"the {what} {text!r} is {len(ids)} tokens ({pieces}), not one token of "
                         f"{model.cfg.model_name}")
    return int(ids[0])


def logit_diff(logits: Float[Tensor, "batch pos d_vocab"], answer: int, wrong: int) -> Tensor:
    """logit[answer] - logit[wrong] at the last position (mean over the batch)."""
    last = logits[:, -1]
    return (last[:, answer] - last[:, wrong]).mean()


def pair_tokens(model, clean: str, corrupted: str) -> tuple[Tensor, Tensor]:
    """Both prompts' tokens [1, pos]; InputError unless they have the same length."""
    clean_ids, corrupted_ids = prompt_tokens(model, clean), prompt_tokens(model, corrupted)
    if clean_ids.shape[1] != corrupted_ids.shape[1]:
        raise InputError(f"the clean and corrupted prompts must have the same number of tokens: the clean prompt "
                         f"has {clean_ids.shape[1]}, the corrupted prompt {corrupted_ids.shape[1]}")
    return clean_ids.to(model.cfg.device), corrupted_ids.to(model.cfg.device)


def activation_patching(model, clean: str, corrupted: str, answer: str, wrong: str,
                        resid: bool = True) -> PatchingResult:
    """Patch every head's output, and (resid) the residual stream at every layer and position, from the clean
    prompt into the corrupted one; see the module docstring. resid=False leaves `resid` empty ([n_layers, 0])."""
    from transformer_lens import patching

    clean_ids, corrupted_ids = pair_tokens(model, clean, corrupted)
    good, bad = answer_id(model, answer), answer_id(model, wrong, "wrong answer")
    if good == bad:
        raise InputError("the answer and the wrong answer are the same token")
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean_ids)
        clean_diff = float(logit_diff(clean_logits, good, bad))
        corrupted_diff = float(logit_diff(model(corrupted_ids), good, bad))
        if abs(clean_diff - corrupted_diff) < 1e-6:
            raise InputError(f"both prompts give the same logit difference ({clean_diff:.4g}): there is nothing "
                             "to restore, so the metric cannot be normalised")

        def metric(logits: Tensor) -> Tensor:  # clean = 1, corrupted = 0
            return (logit_diff(logits, good, bad) - corrupted_diff) / (clean_diff - corrupted_diff)

        heads = patching.get_act_patch_attn_head_out_all_pos(model, corrupted_ids, clean_cache, metric)
        by_pos = (patching.get_act_patch_resid_pre(model, corrupted_ids, clean_cache, metric) if resid
                  else torch.zeros(model.cfg.n_layers, 0))
    return PatchingResult(token_strings(model, clean_ids), token_strings(model, corrupted_ids), good, bad,
                          clean_diff, corrupted_diff, heads.cpu().numpy(), by_pos.cpu().numpy())
