"""Scorers in which a language model reads the explanation and judges held-out windows (delphi's detection and
fuzzing), for explanations that are text only.

Both judge the same windows of a feature: up to N_JUDGED of its held-out activating windows, spread over its top
examples and every band, and as many non-activating ones (evidence.py), one window per question, answered yes
or no (a small model answers that far more reliably than a list of verdicts). A chat that can answer many yes/no
questions at once (the embedded model's yes_no: one batched forward pass reading the answers' next-token logits)
gets all of a feature's questions in one call; an endpoint gets them one by one, each reply read by parse_verdict.

- `detection-llm`: the window as plain text; "is the feature active in it?". Truth: the window activates.
- `fuzz`: the window with tokens marked <<like this>>: on an activating window its firing tokens, except that a
  seeded half of the activating windows are marked on as many tokens where it does not fire; on a non-activating
  window tokens at random. "Does the marking fit the explanation?" Truth: the marks are the firing tokens.
Both report accuracy, precision, recall, F1 and balanced accuracy (scorers.detection_metrics). The markings depend
only on the seed and the feature, so the baseline (another feature's explanation) is judged on the very same
marked windows.
"""
from __future__ import annotations

import re
from typing import Callable

import numpy as np

from analysis.explain.chat import NO_WORDS, YES_WORDS, Chat, MalformedReply
from analysis.explain.evidence import FeatureEvidence, Windows, concat
from analysis.explain.llm import window_text
from analysis.explain.registry import ExplainFailed, Explanation, Score
from analysis.explain.scorers import detection_metrics

N_JUDGED = 10
"""Held-out activating windows judged per feature (and as many non-activating ones)."""
MAX_TOKENS = 3
"""A verdict is its first word."""
_FUZZ_SALT = 0xF022

DETECTION_SYSTEM = (
    "You check descriptions of a language model's features. Given a description of what a feature responds to and "
    "a text excerpt, say whether the feature is likely active somewhere in the excerpt. Answer yes or no.")
FUZZ_SYSTEM = (
    "You check descriptions of a language model's features. Given a description of what a feature responds to and "
    "a text excerpt with some tokens marked like <<this>>, say whether the marked tokens are ones the description "
    "says the feature fires on. Answer yes or no.")


def spread(n: int, k: int) -> np.ndarray:
    """k indices spread evenly over 0..n-1 (all of them when n <= k)."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def judged_windows(evidence: FeatureEvidence) -> tuple[Windows, np.ndarray]:
    """(windows, truth) the judges see: held-out activating windows spread over their order (top examples, then
    bands from strongest to weakest), then as many non-activating ones."""
    held = evidence.heldout
    keep = np.zeros(held.n_windows, bool)
    keep[spread(held.n_windows, N_JUDGED)] = True
    pos = held.select(keep)
    neg = evidence.negatives.slice(0, min(pos.n_windows, evidence.negatives.n_windows))
    return concat(pos, neg), np.arange(pos.n_windows + neg.n_windows) < pos.n_windows


def fuzz_marks(windows: Windows, activating: np.ndarray, seed: int, feature: int) -> tuple[np.ndarray, np.ndarray]:
    """((tokens,) marked, (windows,) marked correctly): activating windows are marked on their firing tokens except
    a seeded half of them, marked on as many non-firing tokens; non-activating windows on randomly chosen tokens (as
    many as an activating window of the feature fires on, at least one)."""
    rng = np.random.default_rng([seed, int(feature), _FUZZ_SALT])
    n = windows.n_windows
    acting = np.flatnonzero(activating)
    wrong = np.zeros(n, bool)
    wrong[rng.choice(acting, len(acting) // 2, replace=False) if len(acting) else []] = True
    fired = windows.acts > 0
    firing_counts = [int(fired[windows.offsets[w]:windows.offsets[w + 1]].sum()) for w in acting] or [1]
    marked = np.zeros(len(windows.token_ids), bool)
    for w in range(n):
        lo, hi = windows.offsets[w], windows.offsets[w + 1]
        here = fired[lo:hi]
        if activating[w] and not wrong[w]:
            marked[lo:hi] = here
            continue
        k = int(here.sum()) if activating[w] else int(rng.choice(firing_counts))
        choices = np.flatnonzero(~here)
        picks = rng.choice(choices, min(max(k, 1), len(choices)), replace=False) if len(choices) else []
        marked[lo + np.asarray(picks, np.int64)] = True
    return marked, activating & ~wrong


_YES, _NO = set(YES_WORDS), set(NO_WORDS)


def parse_verdict(reply: str) -> bool:
    """yes -> True, no -> False from the reply's first word (case, markup and punctuation ignored)."""
    words = re.findall(r"[a-z0-9]+", reply.lower())
    if words and words[0] in _YES:
        return True
    if words and words[0] in _NO:
        return False
    raise MalformedReply(f"no yes or no in {reply[:40]!r}")


class _Judge:
    metrics = ("accuracy", "precision", "recall", "f1", "balanced_accuracy")
    headline = "balanced_accuracy"
    system = ""

    def __init__(self, chat: Callable[[], Chat], seed: int = 0):
        self._chat, self.seed = chat, seed

    def questions(self, windows: Windows, activating: np.ndarray,
                  evidence: FeatureEvidence) -> tuple[list[str], np.ndarray]:
        raise NotImplementedError

    def score(self, explanation: Explanation, evidence: FeatureEvidence) -> Score:
        windows, activating = judged_windows(evidence)
        excerpts, truth = self.questions(windows, activating, evidence)
        questions = [[{"role": "system", "content": self.system},
                      {"role": "user", "content": f"Description: {explanation.text}\n\nExcerpt: {excerpt}\n\n"
                                                  "Answer yes or no."}] for excerpt in excerpts]
        chat = self._chat()
        try:
            if hasattr(chat, "yes_no"):
                predicted = np.array(chat.yes_no(questions), bool)
            else:
                predicted = np.array([parse_verdict(chat.complete(q, MAX_TOKENS)) for q in questions], bool)
        except MalformedReply as exc:
            raise ExplainFailed(f"{self.name}: {exc}") from None
        return Score(detection_metrics(truth, predicted), len(excerpts))


def _texts(windows: Windows, evidence: FeatureEvidence, marked: np.ndarray) -> list[str]:
    return [window_text(evidence.vocab, windows.token_ids[lo:hi], marked[lo:hi])
            for lo, hi in zip(windows.offsets[:-1], windows.offsets[1:])]


class DetectionJudge(_Judge):
    name = "detection-llm"
    system = DETECTION_SYSTEM

    def questions(self, windows, activating, evidence):
        return _texts(windows, evidence, np.zeros(len(windows.token_ids), bool)), activating


class FuzzJudge(_Judge):
    name = "fuzz"
    system = FUZZ_SYSTEM

    def questions(self, windows, activating, evidence):
        marked, correct = fuzz_marks(windows, activating, self.seed, evidence.feature)
        return _texts(windows, evidence, marked), correct
