"""The llm explainer's prompt, checked exactly on hand-made windows, and how replies are read."""
from dataclasses import replace

import numpy as np
import pytest

from analysis.explain.evidence import FeatureEvidence, Vocab
from analysis.explain.llm import (
    EXPLAIN_SYSTEM,
    LLMExplainer,
    explain_messages,
    parse_explanation,
    shown_examples,
    window_text,
)
from analysis.explain.registry import ExplainFailed
from tests.factories import token_windows

VOCAB = ["<bos>", " the", " cat", " sat", "\n", " dog"]
THE, CAT, SAT, NL, DOG = range(1, 6)


def banded(ids, acts, bands):
    return replace(token_windows(ids, acts), bands=np.asarray(bands, np.int64))


def evidence(windows):
    return FeatureEvidence("d", 3, windows, token_windows([]), token_windows([]), Vocab(VOCAB))


class Replies:
    """A chat that answers with the given replies in turn and keeps the messages it was sent."""

    name = "replies"

    def __init__(self, *replies):
        self.replies, self.sent = list(replies), []

    def complete(self, messages, max_tokens):
        self.sent.append(messages)
        return self.replies.pop(0)


EXAMPLES = banded([[THE, CAT, SAT], [CAT, CAT, NL], [DOG, CAT], [CAT, SAT], [SAT, CAT]],
                  [[0, 1, 0], [1, 1, 0], [0, 0.5], [0.2, 0], [0, 0.1]], [-1, -1, 3, 7, 3])


def test_the_prompt_marks_firing_runs_and_shows_top_then_band_examples():
    messages = explain_messages(evidence(EXAMPLES))
    assert messages == [
        {"role": "system", "content": EXPLAIN_SYSTEM},
        {"role": "user", "content": "Examples:\n"
                                    "1. the<< cat>> sat\n"
                                    "2. << cat cat>>\\n\n"
                                    "3. << cat>> sat\n"
                                    "4. dog<< cat>>\n"
                                    "5. sat<< cat>>\n\n"
                                    "Examples 1-2 are its strongest activations; the rest are weaker ones from "
                                    "across its range.\n\nWhat does the feature respond to?"}]


def test_shown_examples_take_ten_top_then_bands_round_robin():
    bands = [-1] * 15 + [2] * 6 + [1] * 6 + [0] * 6
    w = banded([[CAT]] * len(bands), [[1.0]] * len(bands), bands)
    b2, b1, b0 = list(range(15, 21)), list(range(21, 27)), list(range(27, 33))
    assert shown_examples(w) == list(range(10)) + [b2[0], b1[0], b0[0], b2[1], b1[1], b0[1], b2[2], b1[2], b0[2],
                                                   b2[3]]


def test_window_text_closes_a_mark_at_the_end():
    assert window_text(Vocab(VOCAB), np.array([THE, CAT]), np.array([False, True])) == "the<< cat>>"
    assert window_text(Vocab(VOCAB), np.array([NL, THE]), np.array([False, False])) == "\\n the"


@pytest.mark.parametrize(("reply", "expected"), [
    ("  Mentions of cats.\n", "Mentions of cats."),
    ("Explanation: the word 'cat' after 'the'.", "the word 'cat' after 'the'."),
    ('"The token cat."', "The token cat."),
    ("**Description:** cat tokens\nmore lines here", "cat tokens"),
    ("```\n- Pets, mostly cats\n```", "Pets, mostly cats"),
    ("1. Numbers in lists", "Numbers in lists"),
    ("", None), ("   \n\n", None), ("<<>> 12 !!", None), ('""', None),
])
def test_parse_explanation(reply, expected):
    assert parse_explanation(reply) == expected


def test_a_long_reply_is_cut_at_a_word():
    text = parse_explanation("word " * 100)
    assert len(text) <= 203 and text.endswith("word...")


def test_the_explainer_sends_the_prompt_and_keeps_the_parsed_sentence():
    chat = Replies("Explanation: \"the token ' cat'\"")
    out = LLMExplainer(lambda: chat).explain(evidence(EXAMPLES))
    assert out.text == "the token ' cat'" and out.rule is None
    assert chat.sent == [explain_messages(evidence(EXAMPLES))]


def test_garbage_or_no_firing_fails_only_that_feature():
    with pytest.raises(ExplainFailed, match="no explanation in the reply"):
        LLMExplainer(lambda: Replies("?!")).explain(evidence(EXAMPLES))
    silent = banded([[THE, CAT]], [[0, 0]], [-1])
    with pytest.raises(ExplainFailed, match="no firing"):
        LLMExplainer(lambda: Replies("never asked")).explain(evidence(silent))
