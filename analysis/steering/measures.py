"""What every steering run measures, teacher-forced on the generated text.

- KL(steered || default) of the next-token distributions at each generated position of the steered text;
- the target feature's activation on each arm's continuation, read at its hook without any intervention
  (did the text itself come to carry the feature?);
- the perplexity of each arm's continuation under the unsteered model (did the steered text stay fluent?).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from analysis.steering.hooks import Bound, HookState

LOGIT_BUDGET = 32_000_000
"""Logit entries per teacher-forced chunk (rows x positions x vocab), to bound memory for long runs."""
MAX_LOG_PPL = 700.0
"""Mean negative log-likelihood cap (exp(700) ~ 1e304 still fits a float)."""


def _batch(prompt: Tensor, continuations: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """(tokens [n, P + T], valid [n, T]): prompt + continuation per row, padded by repeating the last token."""
    longest = max(len(c) for c in continuations)
    rows, valid = [], []
    for cont in continuations:
        pad = [cont[-1]] * (longest - len(cont)) if cont else []
        rows.append(prompt.tolist() + list(cont) + pad)
        valid.append([True] * len(cont) + [False] * (longest - len(cont)))
    return (torch.tensor(rows, device=prompt.device),
            torch.tensor(valid, dtype=torch.bool, device=prompt.device))


def _chunks(n_rows: int, n_pos: int, d_vocab: int) -> list[slice]:
    per = max(1, LOGIT_BUDGET // max(1, n_pos * d_vocab))
    return [slice(i, min(i + per, n_rows)) for i in range(0, n_rows, per)]


def _teacher_forced(model, tokens: Tensor, n_prompt: int, targets: Sequence, hooks=(), state=None):
    """(log-probs [n, T, vocab] predicting each continuation token, {label: activation [n, T]}).

    The targets are read from an unsteered pass; with hooks and state the pass is steered and no targets
    are read.
    """
    n_new = tokens.shape[1] - n_prompt
    names = sorted({t.hook for t in targets})
    logps, reads = [], {t.label: [] for t in targets}
    with torch.no_grad(), model.hooks(fwd_hooks=list(hooks)):
        for part in _chunks(tokens.shape[0], tokens.shape[1], model.cfg.d_vocab):
            if state is not None:
                state.offset, state.active = 0, True
            try:
                if names:
                    logits, cache = model.run_with_cache(tokens[part], names_filter=names)
                else:
                    logits, cache = model(tokens[part]), {}
            finally:
                if state is not None:
                    state.active = False
            logps.append(torch.log_softmax(logits[:, n_prompt - 1:-1].double(), dim=-1))
            for target in targets:
                acts = cache[target.hook][:, n_prompt:]
                flat = acts.reshape(acts.shape[0] * n_new, -1)
                reads[target.label].append(target.read(flat).reshape(acts.shape[0], n_new))
    return torch.cat(logps), {label: torch.cat(parts) for label, parts in reads.items()}


def _perplexities(logp: Tensor, tokens: Tensor, valid: Tensor, n_prompt: int) -> tuple[list[float], float]:
    """Per row and over all rows: exp(mean negative log-likelihood of the valid continuation tokens)."""
    nll = -logp.gather(-1, tokens[:, n_prompt:, None]).squeeze(-1)
    nll = nll.masked_fill(~valid, 0.0)
    # capped so that a wildly unlikely text still gives a finite (JSON-storable) perplexity
    per_row = (nll.sum(dim=1) / valid.sum(dim=1).clamp(min=1)).clamp(max=MAX_LOG_PPL).exp()
    overall = math.exp(min(float(nll.sum() / valid.sum().clamp(min=1)), MAX_LOG_PPL))
    return [float(p) for p in per_row], overall


def _activation_summary(acts: Tensor, valid: Tensor) -> dict:
    values = acts[valid].double()
    if values.numel() == 0:
        return {"mean": 0.0, "max": 0.0, "fired": 0.0}
    return {"mean": float(values.mean()), "max": float(values.max()), "fired": float((values > 0).double().mean())}


def unique_targets(bound: Sequence[Bound]) -> list:
    seen: dict[str, object] = {}
    for b in bound:
        seen.setdefault(b.target.label, b.target)
    return list(seen.values())


def measure_steered(model, bound: Sequence[Bound], hooks, state: HookState, prompt: Tensor,
                    steered_ids: Sequence[Sequence[int]]) -> dict:
    """KL, perplexity and target activations of the steered continuations (JSON-ready floats)."""
    targets = unique_targets(bound)
    n_prompt = prompt.shape[0]
    tokens, valid = _batch(prompt, steered_ids)
    logp_default, reads = _teacher_forced(model, tokens, n_prompt, targets)
    logp_steered, _ = _teacher_forced(model, tokens, n_prompt, (), hooks, state)
    kl = (logp_steered.exp() * (logp_steered - logp_default)).sum(dim=-1).clamp(min=0.0).masked_fill(~valid, 0.0)
    per_position = kl.sum(dim=0) / valid.sum(dim=0).clamp(min=1)
    rows, overall = _perplexities(logp_default, tokens, valid, n_prompt)
    return {
        "kl_per_position": [float(v) for v in per_position],
        "kl_mean": float(kl.sum() / valid.sum().clamp(min=1)),
        "perplexity_steered": overall, "perplexity_steered_per_sample": rows,
        "targets": [{"label": t.label, "steered": _activation_summary(reads[t.label], valid)} for t in targets],
    }


def measure_default(model, bound: Sequence[Bound], prompt: Tensor, default_ids: Sequence[Sequence[int]]) -> dict:
    """Perplexity and target activations of the default continuations, the baseline of a run."""
    targets = unique_targets(bound)
    tokens, valid = _batch(prompt, default_ids)
    logp, reads = _teacher_forced(model, tokens, prompt.shape[0], targets)
    rows, overall = _perplexities(logp, tokens, valid, prompt.shape[0])
    return {"perplexity_default": overall, "perplexity_default_per_sample": rows,
            "targets": [{"label": t.label, "default": _activation_summary(reads[t.label], valid)}
                        for t in targets]}


def merge(steered: dict, default: dict | None) -> dict:
    """One measures dict from both arms (target entries joined by label)."""
    if default is None:
        return steered
    out = {**default, **steered}
    baseline = {entry["label"]: entry["default"] for entry in default["targets"]}
    out["targets"] = [{**entry, "default": baseline[entry["label"]]} for entry in steered["targets"]]
    return out
