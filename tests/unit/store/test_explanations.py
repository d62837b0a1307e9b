"""store/explanations.py: batches written and replaced, done features, summaries, and the ranked search."""
import pytest

from store.explanations import (
    ExplanationRow,
    ScoreRow,
    done_features,
    get_explanations,
    get_scores,
    score_kinds,
    score_summary,
    scored_features,
    search_explanations,
    write_batch,
)


def _write(con, dictionary, texts, scorer="detection", value=0.8):
    rows = [ExplanationRow(f, "patterns", text, {"tokens": [text]}) for f, text in texts.items()]
    scores = [ScoreRow(f, scorer, "accuracy", value, 0.5, 10) for f in texts]
    write_batch(con, dictionary, "patterns", rows, scores, [scorer], list(texts))


def test_batches_round_trip_and_replace(con):
    _write(con, "d", {1: "' cat'", 2: "' dog'"})
    _write(con, "d", {2: "' dogs'"}, value=0.9)
    assert [(e.feature, e.text, e.rule) for e in get_explanations(con, "d")] == [
        (1, "' cat'", {"tokens": ["' cat'"]}), (2, "' dogs'", {"tokens": ["' dogs'"]})]
    assert get_scores(con, "d", 2) == {"patterns": [ScoreRow(2, "detection", "accuracy", 0.9, 0.5, 10)]}
    assert con.execute("SELECT count(*) FROM explanation_scores").fetchone()[0] == 2
    summary = score_summary(con, "d", "patterns", "detection", "accuracy")
    assert (summary.n, summary.baseline_mean) == (2, 0.5)
    assert summary.mean == pytest.approx(0.85) and summary.std == pytest.approx(0.05)
    assert score_summary(con, "d", "patterns", "detection", "accuracy", [1]).mean == pytest.approx(0.8)


def test_done_needs_every_scorer(con):
    _write(con, "d", {1: "a", 2: "b"})
    _write(con, "d", {2: "b"}, scorer="simulation")
    assert done_features(con, "d", "patterns", ["detection"]) == {1, 2}
    assert done_features(con, "d", "patterns", ["detection", "simulation"]) == {2}
    assert done_features(con, "d", "other", ["detection"]) == set()


def test_a_failed_batch_writes_nothing(con):
    with pytest.raises(Exception):
        write_batch(con, "d", "patterns", [ExplanationRow(1, "patterns", "x")],
                    [ScoreRow(1, "detection", "accuracy", 1.0, 0.5, 3)] * 2, ["detection"], [1])  # duplicate key
    assert con.execute("SELECT count(*) FROM explanations").fetchone()[0] == 0


def test_search_ranks_across_dictionaries_case_insensitively(con):
    _write(con, "a", {1: "' Paris', ' London' after ' in'; 62% of firings", 2: "' Parish'; 40% of firings",
                      3: "' cat'; 90% of firings"})
    _write(con, "b", {7: "' paris'; 80% of firings", 8: "' London'; 50% of firings"})
    con.execute("INSERT INTO feature_labels (dictionary, feature, label, notes) VALUES "
                "('b', 8, 'PARIS street names', ''), ('c', 4, 'capitals: Paris, London', '')")
    hits = search_explanations(con, "PARIS london")
    keys = [(h.dictionary, h.feature) for h in hits]
    # both words first (label words before explanation-only ones), then one word: whole words before parts
    assert keys == [("c", 4), ("b", 8), ("a", 1), ("b", 7), ("a", 2)]
    assert hits[0].label == "capitals: Paris, London" and hits[0].explanation is None
    assert hits[2].explanation.startswith("' Paris'") and hits[2].explainer == "patterns"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert [(h.dictionary, h.feature) for h in search_explanations(con, "paris", limit=2)] == [("b", 8), ("c", 4)]
    assert search_explanations(con, "  ") == [] and search_explanations(con, "zebra") == []
    assert search_explanations(con, "p_ris") == [] and search_explanations(con, "p.ris") == []  # taken literally
    in_b = search_explanations(con, "PARIS london", dictionary="b")  # one dictionary: labels and explanations
    assert [(h.dictionary, h.feature) for h in in_b] == [("b", 8), ("b", 7)]
    assert search_explanations(con, "paris", dictionary="nope") == []


def test_one_result_per_feature_with_its_best_explanation(con):
    _write(con, "a", {1: "' cat'"})
    write_batch(con, "a", "llm", [ExplanationRow(1, "llm", "cats and kittens")], [], [], [1])
    hits = search_explanations(con, "kittens cat")
    assert len(hits) == 1 and hits[0].explainer == "llm"


def test_features_by_score_sorted_and_filtered(con):
    values = {1: 0.9, 2: 0.6, 3: None, 4: 0.75, 5: 0.6}
    write_batch(con, "d", "patterns", [ExplanationRow(f, "patterns", f"t{f}") for f in values],
                [ScoreRow(f, "detection", "accuracy", v, 0.5, 10) for f, v in values.items()]
                + [ScoreRow(1, "simulation", "correlation", 0.1, 0.0, 10)], ["detection", "simulation"], list(values))
    _write(con, "other", {9: "x"}, value=1.0)
    assert score_kinds(con, "d") == [("patterns", "detection", "accuracy"), ("patterns", "simulation", "correlation")]
    page = scored_features(con, "d", "patterns", "detection", "accuracy")
    assert [r.feature for r in page.rows] == [1, 4, 2, 5] and page.total == 4  # undefined left out, ties by id
    assert page.rows[0] == ScoreRow(1, "detection", "accuracy", 0.9, 0.5, 10)
    assert [r.feature for r in scored_features(con, "d", "patterns", "detection", "accuracy", descending=False,
                                               limit=2).rows] == [2, 5]
    above = scored_features(con, "d", "patterns", "detection", "accuracy", min_value=0.7, limit=1, offset=1)
    assert [r.feature for r in above.rows] == [4] and above.total == 2
    assert scored_features(con, "d", "patterns", "fuzz", "accuracy").total == 0
