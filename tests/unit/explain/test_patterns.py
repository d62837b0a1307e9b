"""The patterns explainer on hand-made windows: exact sentences, coverage, precision, bigrams."""
import numpy as np

from analysis.explain.evidence import FeatureEvidence, Vocab
from analysis.explain.patterns import PatternsExplainer, choose, describe, quote
from tests.factories import token_windows

VOCAB = ["<bos>", " in", " Paris", " London", " at", " the", " cat", " dog", " a", " mat", "\n"]
IN, PARIS, LONDON, AT, THE, CAT, DOG, A, MAT, NL = range(1, 11)


def explain(pairs_fired, pairs_quiet):
    """Explain a feature from two-token windows [before, token]: the token fires in `pairs_fired`, not in
    `pairs_quiet` (each window its own context)."""
    ids = [list(p) for p in pairs_fired + pairs_quiet]
    acts = [[0.0, 1.0]] * len(pairs_fired) + [[0.0, 0.0]] * len(pairs_quiet)
    windows = token_windows(ids, acts)
    evidence = FeatureEvidence("d", 7, windows, token_windows([]), token_windows([]), Vocab(VOCAB))
    return PatternsExplainer().explain(evidence)


def test_bigrams_after_one_token_make_the_documented_sentence():
    # Paris and London fire only after " in" (after " at" / " the" they do not): the bigrams are precise, the
    # single tokens are not; cat, dog, mat fire once each but stay quiet twice as often in the same bigram
    fired = [(IN, PARIS)] * 3 + [(IN, LONDON)] * 2 + [(THE, CAT), (THE, DOG), (A, MAT)]
    quiet = [(AT, PARIS)] * 4 + [(THE, LONDON)] * 3 + [(THE, CAT), (THE, DOG), (A, MAT)] * 2
    out = explain(fired, quiet)
    assert out.text == "' Paris', ' London' after ' in'; 62% of firings"
    assert out.rule == {"tokens": [], "bigrams": [[" in", " Paris"], [" in", " London"]], "coverage": 0.625,
                        "firings": 8}


def test_a_precise_token_is_named_alone_and_subsumes_its_bigrams():
    fired = [(IN, CAT)] * 3 + [(THE, CAT)] * 2 + [(A, DOG)] * 5
    quiet = [(IN, MAT)] * 6
    out = explain(fired, quiet)
    assert out.text == "' cat', ' dog'; 100% of firings"
    assert out.rule["tokens"] == [" cat", " dog"] and out.rule["bigrams"] == []


def test_tokens_and_bigrams_together_and_line_breaks_shown():
    fired = [(IN, NL)] * 4 + [(AT, PARIS)] * 4
    quiet = [(THE, PARIS)] * 6
    out = explain(fired, quiet)
    assert out.text == "'\\n' or ' Paris' after ' at'; 100% of firings"


def test_no_firing_and_no_pattern_say_so():
    assert explain([], [(IN, CAT)]).text == "no firing in its explained examples"
    # 40 firings on 40 different tokens: no pattern covers 5% of them
    fired = [(IN, t) for t in range(100, 140)]
    out = explain(fired, [])
    assert out.text == "no token pattern covers a share of its firings"
    assert out.rule["tokens"] == [] and out.rule["firings"] == 40


def test_a_position_shown_in_two_overlapping_windows_counts_once():
    ids = [[IN, PARIS, AT], [PARIS, AT, CAT]]
    acts = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]  # the second window starts one later: its PARIS is the same firing
    windows = token_windows(ids, acts, before=[-1, IN], context_ids=[5, 5], starts=[3, 4])
    evidence = FeatureEvidence("d", 1, windows, token_windows([]), token_windows([]), Vocab(VOCAB))
    assert PatternsExplainer().explain(evidence).rule["firings"] == 1


def test_choose_stops_at_the_pattern_limit():
    ids = np.arange(10, 20).repeat(10)  # ten tokens, ten firings each: four patterns cover 40%
    tokens, bigrams, share = choose(ids, np.full(len(ids), IN), np.ones(len(ids), bool))
    assert len(tokens) + len(bigrams) == 4 and share == 0.4


def test_describe_and_quote():
    assert quote(" a\tb") == "' a\\tb'"
    assert describe([], [(None, " The")], 1.0, 3) == "' The' after the start of a text; 100% of firings"
