"""Codebook extras: find the codes that fire where a regular expression matches the token.

    code_search      the ranking itself, from token texts and the codes chosen at each position
    search_batches   the codes of a codebook dictionary over batches of (token ids, activations), then ranked
    search_tokens    the same over token ids, running the model to the dictionary's hook (the UI's code search)

Code usage counts need nothing extra: a code's usage is its firing count in FeatureStats.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from store.errors import InputError


class CodeMatch(NamedTuple):
    code: int
    precision: float
    """Share of the code's positions where the regex matches."""
    recall: float
    """Share of the matching positions where the code is active."""
    n_active: int
    """Positions where the code is active."""


def code_search(token_texts: Sequence[str], code_ids, regex: str, min_recall: float = 0.01,
                limit: int | None = None) -> list[CodeMatch]:
    """Rank codes by how precisely they pick out the positions whose token matches `regex`.

    As in the Codebook Features paper's code search: positions are those whose token text matches
    (re.search); for each code, precision and recall against them; codes with recall <= min_recall are
    dropped and the rest sorted by precision (then recall). token_texts [N] one string per position;
    code_ids [N, k] the active codes at each position (negative ids are padding).
    """
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise ValueError(f"regex does not compile: {exc}") from None
    codes = code_ids.cpu().numpy() if isinstance(code_ids, torch.Tensor) else np.asarray(code_ids)
    if codes.ndim != 2 or codes.shape[0] != len(token_texts):
        raise ValueError(f"code_ids must be [{len(token_texts)}, k], got {codes.shape}")
    # each distinct token string is matched once (corpora repeat tokens a lot)
    uniques, inverse = np.unique(np.asarray(token_texts, dtype=object).astype(str), return_inverse=True)
    hit = np.fromiter((pattern.search(t) is not None for t in uniques), bool, len(uniques))[inverse]
    n_match = int(hit.sum())
    if n_match == 0:
        return []
    codes = np.sort(codes, axis=1)
    valid = codes >= 0
    valid[:, 1:] &= codes[:, 1:] != codes[:, :-1]  # a code listed twice at a position counts once
    n_codes = int(codes.max()) + 1 if valid.any() else 0
    active = np.bincount(codes[valid], minlength=n_codes)
    on_match = np.bincount(codes[hit[:, None] & valid], minlength=n_codes)
    used = np.nonzero(active)[0]
    precision = on_match[used] / active[used]
    recall = on_match[used] / n_match
    keep = recall > min_recall
    used, precision, recall = used[keep], precision[keep], recall[keep]
    order = np.lexsort((used, -recall, -precision))[:limit]
    return [CodeMatch(int(used[i]), float(precision[i]), float(recall[i]), int(active[used[i]]))
            for i in order]


def check_regex(regex: str) -> None:
    """InputError (one line) unless `regex` is a Python regular expression that compiles."""
    try:
        re.compile(regex)
    except re.error as exc:
        raise InputError(f"the regex {regex!r} does not compile: {exc}") from None


@torch.no_grad()
def search_batches(sae, batches: Iterable[tuple[Tensor, Tensor]], vocab: Sequence[str], regex: str,
                   limit: int | None = 20, skip_first: int = 1,
                   on_batch: Callable[[int], None] | None = None) -> list[CodeMatch]:
    """code_search over batches of (token ids [n, ctx], activations [n, ctx, d_in]) read by codebook `sae`;
    the first `skip_first` positions of each context (BOS) are left out; on_batch(n) after each batch."""
    from sae.dictionaries import codebook_code_ids

    check_regex(regex)
    device = sae.W_dec.device
    texts: list[str] = []
    codes: list[Tensor] = []
    for tokens, acts in batches:
        x = acts[:, skip_first:].to(device, torch.float32).reshape(-1, acts.shape[-1])  # (n * (ctx - skip), d)
        codes.append(codebook_code_ids(sae, x).cpu())
        texts.extend(vocab[t] for t in tokens[:, skip_first:].reshape(-1).tolist())
        if on_batch is not None:
            on_batch(len(tokens))
    if not codes:
        return []
    return code_search(texts, torch.cat(codes), regex, limit=limit)


def search_tokens(model, sae, hook: str, token_ids: Tensor, regex: str, limit: int | None = 20,
                  batch: int = 16) -> list[CodeMatch]:
    """search_batches over contexts token_ids [n, ctx], running `model` up to `hook` a batch at a time."""
    from analysis.features.analyze import SKIP_FIRST, vocab_texts
    from sae.activations import capture
    from sae.dictionaries import arch_of
    from sae.models import stop_layer

    check_regex(regex)  # before the model runs
    if not arch_of(sae).has_codes:
        raise InputError(f"code search needs a codebook dictionary, not {arch_of(sae).name}")
    stop = stop_layer(model, hook)

    def batches():
        for lo in range(0, token_ids.shape[0], batch):
            tokens = token_ids[lo:lo + batch]
            acts = capture(model, hook, tokens.to(model.cfg.device), stop).float()  # (n * ctx, d)
            yield tokens, acts.view(tokens.shape[0], tokens.shape[1], -1)

    vocab = vocab_texts(model.tokenizer, model.cfg.d_vocab)
    return search_batches(sae, batches(), vocab, regex, limit=limit, skip_first=SKIP_FIRST)
