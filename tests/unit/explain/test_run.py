"""run_explain on a planted dictionary: explanations find the planted token and beat the baseline, the baseline is
another feature's, a killed run resumes to the uninterrupted result, labels are never written."""
import pytest

from analysis.explain import run as run_module
from analysis.explain.evidence import EvidenceReader
from analysis.explain.registry import Explanation
from analysis.explain.run import ExplainRequest, derangement, parse_features, plan, run_explain
from analysis.explain.scorers import Simulation
from store import InputError, connect
from store.explanations import get_explanations
from store.queries import set_label
from tests.factories import REPORT_VOCAB, build_report_store, planted_dictionary


def _rows(con):
    return (con.execute("SELECT * EXCLUDE (created) FROM explanations ORDER BY ALL").fetchall(),
            con.execute("SELECT * EXCLUDE (created) FROM explanation_scores ORDER BY ALL").fetchall())


def test_parse_features():
    assert parse_features("1,5,9-12, 3") == (1, 3, 5, 9, 10, 11, 12)
    for bad in ("", "a", "5-2", "1,,2", "-3", "1-2-3"):
        with pytest.raises(InputError, match="1,5,9-20"):
            parse_features(bad)


def test_derangement_pairs_every_feature_with_another():
    pairs = derangement(list(range(10, 30)), seed=4)
    assert sorted(pairs) == sorted(pairs.values()) == list(range(10, 30))
    assert all(f != other for f, other in pairs.items())
    assert derangement([5], 0) == {}
    assert derangement(list(range(10, 30)), seed=4) == pairs


def test_planted_features_are_found_and_beat_the_baseline(planted):
    con, tokens = planted
    result = run_explain(con, ExplainRequest("planted"))
    assert result.plan.features == sorted(tokens) and 0 not in result.plan.features  # feature 0 is dead
    assert result.explained == len(tokens) and not result.failed
    for e in get_explanations(con, "planted", "patterns"):
        assert e.rule["tokens"] == [REPORT_VOCAB[tokens[e.feature]]]
        assert e.text == f"'{REPORT_VOCAB[tokens[e.feature]]}'; 100% of firings"
    metric, detection = result.summaries["detection"]
    assert metric == "balanced_accuracy" and detection.n == len(tokens)
    assert detection.mean - detection.baseline_mean >= 0.3
    _, simulation = result.summaries["simulation"]
    assert simulation.mean - simulation.baseline_mean >= 0.5


def test_the_baseline_is_the_partners_explanation_on_ones_own_windows(planted):
    con, _ = planted
    run_explain(con, ExplainRequest("planted", features=(1, 2, 3), scorers=("simulation",)))
    pairs = derangement([1, 2, 3], 0)
    texts = {e.feature: e for e in get_explanations(con, "planted", "patterns")}
    for feature, partner in pairs.items():
        baseline = con.execute("SELECT baseline FROM explanation_scores WHERE feature = ?", [feature]).fetchone()[0]
        swapped = con.execute("SELECT value FROM explanation_scores WHERE feature = ?", [feature]).fetchone()[0]
        assert baseline != swapped
        # the partner's rule through the same scorer, on this feature's own windows
        ev = EvidenceReader(con, "planted", 0).read(con, [feature])[feature]
        expected = Simulation().score(Explanation(texts[partner].text, texts[partner].rule), ev)
        assert baseline == pytest.approx(expected.values["correlation"])


def test_a_killed_run_resumes_to_the_uninterrupted_result(planted, monkeypatch):
    con, tokens = planted
    calls = {"n": 0}
    write = run_module.write_batch

    def killed_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if the process died before the third batch's transaction
        return write(*args, **kwargs)

    monkeypatch.setattr(run_module, "write_batch", killed_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_explain(con, ExplainRequest("planted", batch=5))
    monkeypatch.undo()
    assert len(get_explanations(con, "planted", "patterns")) == 10
    again = run_explain(con, ExplainRequest("planted", batch=5))
    assert again.plan.todo == sorted(tokens)[10:] and again.explained == len(tokens) - 10
    fresh = connect(":memory:")
    build_report_store(fresh, n_features=8)
    planted_dictionary(fresh)
    run_explain(fresh, ExplainRequest("planted", batch=5))
    assert _rows(con) == _rows(fresh)
    fresh.close()


def test_done_features_are_skipped_unless_forced_and_a_new_scorer_reuses_the_explanation(planted):
    con, tokens = planted
    run_explain(con, ExplainRequest("planted", features=(1, 2, 3, 4), scorers=("detection",)))
    before = con.execute("SELECT feature, created FROM explanations ORDER BY feature").fetchall()
    same = run_explain(con, ExplainRequest("planted", features=(1, 2, 3, 4), scorers=("detection",)))
    assert same.plan.todo == [] and same.explained == 0
    more = run_explain(con, ExplainRequest("planted", features=(1, 2, 3, 4), scorers=("detection", "simulation")))
    assert more.plan.todo == [1, 2, 3, 4] and more.explained == 0  # scored, not explained again
    assert con.execute("SELECT feature, created FROM explanations ORDER BY feature").fetchall() == before
    assert con.execute("SELECT count(DISTINCT feature) FROM explanation_scores WHERE scorer = 'simulation'"
                       ).fetchone()[0] == 4
    forced = run_explain(con, ExplainRequest("planted", features=(1, 2, 3, 4), force=True))
    assert forced.explained == 4


def test_labels_are_never_written(planted):
    con, _ = planted
    set_label(con, "planted", 3, "my own words", "my notes")
    before = con.execute("SELECT * FROM feature_labels ORDER BY ALL").fetchall()
    run_explain(con, ExplainRequest("planted", force=True))
    assert con.execute("SELECT * FROM feature_labels ORDER BY ALL").fetchall() == before


def test_plan_checks_the_dictionary_and_the_features(planted):
    con, tokens = planted
    with pytest.raises(InputError, match="unknown dictionary 'nope'"):
        plan(con, ExplainRequest("nope"))
    with pytest.raises(InputError, match="out of range: planted has features 0..23"):
        plan(con, ExplainRequest("planted", features=(3, 24)))
    with pytest.raises(InputError, match="unknown scorer 'fizz'"):
        plan(con, ExplainRequest("planted", scorers=("fizz",)))
    chosen = plan(con, ExplainRequest("planted", features=(0, 1, 2)))
    assert chosen.features == [1, 2] and chosen.dead == 1
    sampled = plan(con, ExplainRequest("planted", sample=5, seed=1))
    assert len(sampled.features) == 5 and sampled == plan(con, ExplainRequest("planted", sample=5, seed=1))
