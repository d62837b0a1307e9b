"""The `llm` explainer: a language model reads a feature's examples with the firing tokens marked and describes it.

After delphi's max-activation explainer: the prompt shows the strongest examples of the explain set (evidence.py)
and examples sampled across the feature's activation bands, each a window of text in which the tokens where the
feature fires are marked <<like this>> (a run of adjacent firing tokens as one mark), and asks for one short
sentence. The reply is read leniently (parse_explanation); a reply with no usable sentence fails that feature only.
"""
from __future__ import annotations

import re
from typing import Callable

import numpy as np

from analysis.explain.chat import Chat, MalformedReply
from analysis.explain.evidence import FeatureEvidence, Vocab, Windows
from analysis.explain.registry import ExplainFailed, Explanation

N_TOP = 10
"""Strongest examples shown."""
N_BANDS = 10
"""Examples sampled across the activation bands shown after them (taken band by band, strongest band first)."""
MAX_TOKENS = 60
"""Tokens the reply may take."""
MAX_CHARS = 200
"""An explanation longer than this is cut at a word boundary."""
OPEN, CLOSE = "<<", ">>"

EXPLAIN_SYSTEM = (
    "You study the internal features of a language model. You will see short text excerpts on which one feature "
    f"is active; in each, the tokens where it fires are marked like {OPEN}this{CLOSE}. Describe in one short "
    "sentence what the feature responds to: the marked tokens, and the words just before them when they matter. "
    "Reply with the sentence only.")


def window_text(vocab: Vocab, ids: np.ndarray, marked: np.ndarray) -> str:
    """The window's text with each run of `marked` tokens wrapped in << >>; line breaks shown as \\n so that an
    example stays on one line."""
    out, inside = [], False
    for token_id, mark in zip(ids.tolist(), marked.tolist()):
        if mark and not inside:
            out.append(OPEN)
        elif not mark and inside:
            out.append(CLOSE)
        inside = bool(mark)
        out.append(vocab.text(token_id))
    if inside:
        out.append(CLOSE)
    return "".join(out).replace("\r", "\\r").replace("\n", "\\n").strip()


def shown_examples(windows: Windows) -> list[int]:
    """Indices of the windows the prompt shows: the first N_TOP top examples (stored strongest first), then up to
    N_BANDS band samples taken round-robin over the bands, strongest band first."""
    top = [i for i in range(windows.n_windows) if windows.bands[i] == -1][:N_TOP]
    by_band: dict[int, list[int]] = {}
    for i in range(windows.n_windows):
        if windows.bands[i] >= 0:
            by_band.setdefault(int(windows.bands[i]), []).append(i)
    queues = [by_band[b] for b in sorted(by_band, reverse=True)]
    sampled: list[int] = []
    while len(sampled) < N_BANDS and any(queues):
        for queue in queues:
            if queue and len(sampled) < N_BANDS:
                sampled.append(queue.pop(0))
    return top + sampled


def explain_messages(evidence: FeatureEvidence) -> list[dict[str, str]]:
    w = evidence.explain
    picks = shown_examples(w)
    n_top = sum(1 for i in picks if w.bands[i] == -1)
    lines = []
    for number, i in enumerate(picks, 1):
        lo, hi = w.offsets[i], w.offsets[i + 1]
        lines.append(f"{number}. {window_text(evidence.vocab, w.token_ids[lo:hi], w.acts[lo:hi] > 0)}")
    note = (f"Examples 1-{n_top} are its strongest activations; the rest are weaker ones from across its range."
            if 0 < n_top < len(picks) else "")
    user = "Examples:\n" + "\n".join(lines) + ("\n\n" + note if note else "") + "\n\nWhat does the feature respond to?"
    return [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": user}]


_LABEL = re.compile(r"^\**\s*(?:explanation|description|answer|feature|sentence)\s*\**\s*[:\-]\s*\**\s*",
                    re.IGNORECASE)
_QUOTED = re.compile(r"^[\"'`\u201c\u2018](.+?)[\"'`\u201d\u2019]\.?$")
_WORD = re.compile(r"[A-Za-z]{2,}")


def parse_explanation(reply: str) -> str | None:
    """The explanation in a reply: its first non-empty line (code fences and list markers dropped), without a
    leading "Explanation:"-like label or the quotes around a quoted answer, cut to MAX_CHARS; None when nothing
    with a word in it is left."""
    lines = [line.strip() for line in reply.replace("\r", "\n").split("\n")]
    lines = [line for line in lines if line and not line.startswith("```")]
    if not lines:
        return None
    text = _LABEL.sub("", re.sub(r"^(?:[-*\u2022]|\d+[.)])\s+", "", lines[0])).strip()
    quoted = _QUOTED.match(text)
    if quoted:
        text = quoted.group(1).strip()
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS].rsplit(" ", 1)[0].rstrip(",;:") + "..."
    return text if _WORD.search(text) else None


class LLMExplainer:
    name = "llm"

    def __init__(self, chat: Callable[[], Chat]):
        self._chat = chat
        """Gives the chat on first use (loading a model only when a feature needs explaining)."""

    def explain(self, evidence: FeatureEvidence) -> Explanation:
        if not (evidence.explain.acts > 0).any():
            raise ExplainFailed(f"feature {evidence.feature} has no firing in its explain set")
        try:
            reply = self._chat().complete(explain_messages(evidence), MAX_TOKENS)
        except MalformedReply as exc:
            raise ExplainFailed(str(exc)) from None
        text = parse_explanation(reply)
        if text is None:
            raise ExplainFailed(f"no explanation in the reply {reply[:60]!r}")
        return Explanation(text)
