"""detection and simulation on hand-made windows whose answers are worked out by hand (and numpy's corrcoef)."""
import numpy as np
import pytest

from analysis.explain.evidence import FeatureEvidence, Vocab
from analysis.explain.registry import Explanation
from analysis.explain.scorers import Detection, Simulation, detection_metrics, pearson, rule_matches
from tests.factories import token_windows

VOCAB = ["<bos>", " in", " Paris", " at", " the", " cat"]
IN, PARIS, AT, THE, CAT = range(1, 6)
PARIS_AFTER_IN = Explanation("' Paris' after ' in'", {"tokens": [], "bigrams": [[" in", " Paris"]]})


def evidence(held, held_acts, negatives):
    return FeatureEvidence("d", 0, token_windows([]), token_windows(held, held_acts), token_windows(negatives),
                           Vocab(VOCAB))


def test_rule_matches_tokens_and_bigrams():
    w = token_windows([[IN, PARIS, AT, PARIS, CAT]])
    assert rule_matches(PARIS_AFTER_IN.rule, Vocab(VOCAB), w).tolist() == [False, True, False, False, False]
    both = {"tokens": [" cat"], "bigrams": [[" in", " Paris"]]}
    assert rule_matches(both, Vocab(VOCAB), w).tolist() == [False, True, False, False, True]
    assert not rule_matches(None, Vocab(VOCAB), w).any()
    # the token before a window's first token counts: window [PARIS] after IN
    assert rule_matches(PARIS_AFTER_IN.rule, Vocab(VOCAB), token_windows([[PARIS]], before=[IN])).tolist() == [True]


def test_detection_metrics_of_a_known_confusion():
    truth = np.array([True, True, True, False, False, False])
    predicted = np.array([True, True, False, True, False, False])  # tp 2, fn 1, fp 1, tn 2
    m = detection_metrics(truth, predicted)
    assert m["accuracy"] == pytest.approx(4 / 6) and m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    none = detection_metrics(np.array([True, False]), np.array([False, False]))
    assert none["precision"] is None and none["recall"] == 0.0 and none["balanced_accuracy"] == 0.5


def test_detection_scores_windows_by_any_match():
    held = [[IN, PARIS, AT], [AT, PARIS, THE], [THE, IN, PARIS]]  # the rule finds the 1st and 3rd
    acts = [[0, 2, 0], [0, 1, 0], [0, 0, 3]]
    negatives = [[THE, CAT, AT], [IN, PARIS, THE], [AT, AT, AT]]  # a false alarm in the 2nd
    score = Detection().score(PARIS_AFTER_IN, evidence(held, acts, negatives))
    assert score.n_examples == 6
    assert score.values == pytest.approx({"accuracy": 4 / 6, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3,
                                          "balanced_accuracy": 2 / 3})


def test_simulation_correlates_the_rule_with_token_activations():
    held = [[IN, PARIS, AT], [AT, PARIS, THE]]
    acts = [[0, 2, 0], [0, 1, 0]]
    negatives = [[IN, PARIS, THE]]
    score = Simulation().score(PARIS_AFTER_IN, evidence(held, acts, negatives))
    predicted = [0, 1, 0, 0, 0, 0, 0, 1, 0]
    real = [0, 2, 0, 0, 1, 0, 0, 0, 0]
    assert score.values["correlation"] == pytest.approx(np.corrcoef(predicted, real)[0, 1])
    assert score.n_examples == 3


def test_pearson_edges():
    assert pearson(np.array([1.0, 1.0, 1.0]), np.array([0.0, 1.0, 2.0])) == 0.0  # a constant prediction
    assert pearson(np.array([1.0]), np.array([1.0])) is None
    assert pearson(np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0, 4.0])) == pytest.approx(1.0)


def test_no_heldout_windows_leave_every_metric_undefined():
    empty = evidence([], [], [])
    assert Detection().score(PARIS_AFTER_IN, empty).values == dict.fromkeys(Detection.metrics)
    assert Simulation().score(PARIS_AFTER_IN, empty).values == {"correlation": None}
