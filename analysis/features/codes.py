"""Codebook extras: find the codes that fire where a regular expression matches the token.

Code usage counts need nothing extra: a code's usage is its firing count in FeatureStats.
"""
from __future__ import annotations

import re
from typing import NamedTuple, Sequence

import numpy as np
import torch


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
