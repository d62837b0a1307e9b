"""The `patterns` explainer: which tokens, or which tokens after which others, a feature fires on.

From the explain set's windows (evidence.py) it counts every firing (a token with non-zero activation, each
context position once) under two kinds of pattern: the token itself, and the previous token with the token. It
then picks greedily the pattern that covers most firings not yet covered, among the patterns that are precise
in those windows (at least MIN_PRECISION of the tokens they match fire), until PATTERNS_MAX patterns or
COVERAGE_TARGET of the firings, and writes them as a sentence with the share covered:

    "' Paris', ' London' after ' in'; 62% of firings"

The rule (tokens and bigrams as token text) is stored as JSON so that the scorers can apply it.
"""
from __future__ import annotations

import numpy as np

from analysis.explain.evidence import FeatureEvidence, Vocab
from analysis.explain.registry import Explanation

PATTERNS_MAX = 4
COVERAGE_TARGET = 0.9
MIN_PRECISION = 0.5
"""A pattern that matches more non-firing tokens than firing ones in the explain windows is not picked (unless no
pattern is precise: then the commonest ones are, which the scores will show)."""
MIN_GAIN = 0.05
"""A pattern must cover at least this share of the firings more (and at least one firing)."""
START = -1
"""prev_ids value at a context's start."""
_PAIR = np.int64(1 << 32)


def quote(text: str) -> str:
    """A token as it reads in an explanation: in single quotes, with its leading space, line breaks shown."""
    return "'" + text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + "'"


def describe(tokens: list[str], bigrams: list[tuple[str | None, str]], share: float, firings: int) -> str:
    """The sentence of a rule: single tokens first, then bigrams grouped by the token before, in the given
    order; None as the token before is the context's start. `firings`: how many firings the rule is taken from."""
    parts, after = [], {}
    if tokens:
        parts.append(", ".join(quote(t) for t in tokens))
    for before, token in bigrams:
        after.setdefault(before, []).append(token)
    for before, group in after.items():
        where = "the start of a text" if before is None else quote(before)
        parts.append(f"{', '.join(quote(t) for t in group)} after {where}")
    if not parts:
        return ("no token pattern covers a share of its firings" if firings else
                "no firing in its explained examples")
    return f"{' or '.join(parts)}; {round(100 * share)}% of firings"


def _pair(prev: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return (prev + 1) * _PAIR + ids


def _counts(keys: np.ndarray, among: np.ndarray) -> np.ndarray:
    """How often each of the (sorted, unique) `keys` occurs in `among`."""
    values, counts = np.unique(among, return_counts=True)
    at = np.searchsorted(values, keys)
    at[at == len(values)] = 0
    return np.where(values[at] == keys, counts[at], 0) if len(values) else np.zeros(len(keys), np.int64)


def choose(ids: np.ndarray, prev: np.ndarray, fired: np.ndarray) -> tuple[list[int], list[tuple[int, int]], float]:
    """(token ids, (prev id, token id) bigrams, share of firings covered) for tokens `ids` with previous tokens
    `prev`, of which `fired` fire (one entry per context position)."""
    n = int(fired.sum())
    if n == 0:
        return [], [], 0.0
    f_ids, f_pairs = ids[fired], _pair(prev[fired], ids[fired])
    uni, bi = np.unique(f_ids), np.unique(f_pairs)
    keys = np.concatenate([uni, bi])
    is_bigram = np.concatenate([np.zeros(len(uni), bool), np.ones(len(bi), bool)])
    hits = np.concatenate([_counts(uni, f_ids), _counts(bi, f_pairs)])
    false = np.concatenate([_counts(uni, ids[~fired]), _counts(bi, _pair(prev[~fired], ids[~fired]))])
    precision = hits / (hits + false)
    eligible = precision >= MIN_PRECISION
    if not eligible.any():
        eligible[:] = True
    covered = np.zeros(n, bool)
    chosen: list[int] = []
    while len(chosen) < PATTERNS_MAX and covered.mean() < COVERAGE_TARGET:
        gain = np.concatenate([_counts(uni, f_ids[~covered]), _counts(bi, f_pairs[~covered])])
        gain = np.where(eligible, gain, 0)
        # most new firings first; among equals a single token before a bigram, the more precise, the lower id
        best = np.lexsort((keys, -precision, is_bigram, -gain))[0]
        if gain[best] < max(1, MIN_GAIN * n):
            break
        covered |= (f_pairs == keys[best]) if is_bigram[best] else (f_ids == keys[best])
        if not is_bigram[best]:  # a single token subsumes the bigrams ending in it
            chosen = [c for c in chosen if not (is_bigram[c] and keys[c] % _PAIR == keys[best])]
        chosen.append(int(best))
        eligible[best] = False
    tokens = [int(keys[c]) for c in chosen if not is_bigram[c]]
    bigrams = [(int(keys[c] // _PAIR) - 1, int(keys[c] % _PAIR)) for c in chosen if is_bigram[c]]
    return tokens, bigrams, float(covered.mean())


def rule_of(tokens: list[int], bigrams: list[tuple[int, int]], share: float, n_firings: int,
            vocab: Vocab) -> dict:
    return {"tokens": [vocab.text(t) for t in tokens],
            "bigrams": [[None if p == START else vocab.text(p), vocab.text(t)] for p, t in bigrams],
            "coverage": round(share, 4), "firings": n_firings}


class PatternsExplainer:
    name = "patterns"

    def explain(self, evidence: FeatureEvidence) -> Explanation:
        w = evidence.explain
        # overlapping windows of one context show a position more than once: count each firing once
        key = w.context_ids[w.window_of_token()] * (1 << 24) + w.positions()
        _, once = np.unique(key, return_index=True)
        ids, prev, fired = w.token_ids[once], w.prev_ids[once], w.acts[once] > 0
        tokens, bigrams, share = choose(ids, prev, fired)
        rule = rule_of(tokens, bigrams, share, int(fired.sum()), evidence.vocab)
        return Explanation(describe(rule["tokens"], [tuple(b) for b in rule["bigrams"]], share, rule["firings"]), rule)
