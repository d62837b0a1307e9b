"""Scorers that apply an explanation's rule to held-out windows (delphi's detection and simulation, with the rule
in place of a language model reading the explanation).

A rule (`{"tokens": [...], "bigrams": [[before, token], ...]}`, token text) matches a token when the token is one
of `tokens`, or when it and the token before it are one of `bigrams`. Both scorers use the feature's held-out
activating windows and as many non-activating ones (evidence.py).
"""
from __future__ import annotations

import numpy as np

from analysis.explain.evidence import FeatureEvidence, Vocab, Windows, concat
from analysis.explain.registry import Explanation, Score

_PAIR = np.int64(1 << 32)


def rule_matches(rule: dict | None, vocab: Vocab, windows: Windows) -> np.ndarray:
    """(tokens,) bool: where the rule matches (nowhere for no rule)."""
    if not rule:
        return np.zeros(len(windows.token_ids), bool)
    tokens = np.array([i for text in rule.get("tokens", []) for i in vocab.ids(text)], np.int64)
    pairs = np.array([(p + 1) * _PAIR + t for before, token in rule.get("bigrams", [])
                      for p in ([-1] if before is None else vocab.ids(before)) for t in vocab.ids(token)], np.int64)
    return np.isin(windows.token_ids, tokens) | np.isin((windows.prev_ids + 1) * _PAIR + windows.token_ids, pairs)


def _any_per_window(matches: np.ndarray, windows: Windows) -> np.ndarray:
    return np.bincount(windows.window_of_token(), weights=matches, minlength=windows.n_windows) > 0


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def detection_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    """accuracy, precision, recall, f1, balanced_accuracy of boolean predictions (None where undefined)."""
    tp = int((truth & predicted).sum())
    fp = int((~truth & predicted).sum())
    fn = int((truth & ~predicted).sum())
    tn = int((~truth & ~predicted).sum())
    recall, specificity = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    return {"accuracy": _ratio(tp + tn, len(truth)), "precision": _ratio(tp, tp + fp), "recall": recall,
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "balanced_accuracy": None if recall is None or specificity is None else (recall + specificity) / 2}


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation; 0 when one side is constant (a prediction that never varies tells nothing), None
    with fewer than two points."""
    if len(x) < 2:
        return None
    x, y = x - x.mean(), y - y.mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else 0.0


class Detection:
    name = "detection"
    metrics = ("accuracy", "precision", "recall", "f1", "balanced_accuracy")
    headline = "balanced_accuracy"

    def score(self, explanation: Explanation, evidence: FeatureEvidence) -> Score:
        pos, neg = evidence.heldout, evidence.negatives
        both = concat(pos, neg)
        predicted = _any_per_window(rule_matches(explanation.rule, evidence.vocab, both), both)
        truth = np.arange(both.n_windows) < pos.n_windows
        return Score(detection_metrics(truth, predicted), both.n_windows)


class Simulation:
    name = "simulation"
    metrics = ("correlation",)
    headline = "correlation"

    def score(self, explanation: Explanation, evidence: FeatureEvidence) -> Score:
        both = concat(evidence.heldout, evidence.negatives)
        predicted = rule_matches(explanation.rule, evidence.vocab, both).astype(np.float64)
        return Score({"correlation": pearson(predicted, both.acts.astype(np.float64))}, both.n_windows)
