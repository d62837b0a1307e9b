"""Explanations in every export: the report (HTML, Markdown, JSON) shows them with their scores and baselines under
the user's label, import-report brings them back without wiping others, the Neuronpedia export writes its
explanation records."""
from __future__ import annotations

import gzip
import json

import pytest

from analysis.reports import Selection, collect_report, import_report, render_html, render_markdown, write_report
from analysis.reports.neuronpedia import export_neuronpedia
from store import InputError, connect
from store.explanations import ExplanationRow, ScoreRow, explanations_of, write_batch
from tests.factories import HOSTILE_LABEL, build_report_store

HOSTILE_TEXT = HOSTILE_LABEL + " *star* _under_ [link](http://x) | pipe `tick` # hash"
FEATURES = (1, 2, 3, 4)


def _explain(con) -> None:
    """topk-demo: features 1 and 2 explained by `patterns` (scored), 3 by `llm` with a hostile text (one metric
    undefined); 4 has nothing."""
    write_batch(con, "topk-demo", "patterns",
                [ExplanationRow(1, "patterns", "' cat'; 90% of firings", {"tokens": [6]}),
                 ExplanationRow(2, "patterns", "' dog' after ' the'; 40% of firings")],
                [ScoreRow(1, "detection", "balanced_accuracy", 0.875, 0.5, 40),
                 ScoreRow(1, "simulation", "correlation", 0.75, -0.0625, 40),
                 ScoreRow(2, "detection", "balanced_accuracy", 0.625, 0.5, 30)],
                ["detection", "simulation"], [1, 2])
    write_batch(con, "topk-demo", "llm", [ExplanationRow(3, "llm", HOSTILE_TEXT)],
                [ScoreRow(3, "detection", "precision", None, 0.25, 12),
                 ScoreRow(3, "detection", "recall", 0.5, None, 12)],
                ["detection"], [3])


@pytest.fixture
def store():
    con = connect(":memory:")
    build_report_store(con, n_features=48)
    _explain(con)
    yield con
    con.close()


def _rows(con, dictionary="topk-demo"):
    explanations = con.execute("SELECT feature, explainer, text FROM explanations WHERE dictionary = ? "
                               "ORDER BY ALL", [dictionary]).fetchall()
    scores = con.execute("SELECT feature, explainer, scorer, metric, value, baseline, n_examples FROM "
                         "explanation_scores WHERE dictionary = ? ORDER BY ALL", [dictionary]).fetchall()
    return explanations, scores


def test_the_report_collects_explanations_with_scores(store):
    report = collect_report(store, "topk-demo", Selection(features=FEATURES))
    by = {e.card.feature: e.explanations for e in report.features}
    assert [(e.explainer, e.text) for e in by[1]] == [("patterns", "' cat'; 90% of firings")]
    assert [(s.scorer, s.metric, s.value, s.baseline, s.n_examples) for s in by[1][0].scores] == [
        ("detection", "balanced_accuracy", 0.875, 0.5, 40), ("simulation", "correlation", 0.75, -0.0625, 40)]
    assert by[4] == [] and by[3][0].text == HOSTILE_TEXT
    assert explanations_of(store, "topk-demo", []) == {}


def test_json_round_trip_with_explanations(store, tmp_path):
    report = collect_report(store, "topk-demo", Selection(features=FEATURES))
    path = write_report(report, "json", tmp_path / "r.json")[0]
    data = json.loads(path.read_text())
    assert data["features"][0]["explanations"] == [
        {"explainer": "patterns", "text": "' cat'; 90% of firings",
         "scores": [{"scorer": "detection", "metric": "balanced_accuracy", "value": 0.875, "baseline": 0.5,
                     "n_examples": 40},
                    {"scorer": "simulation", "metric": "correlation", "value": 0.75, "baseline": -0.0625,
                     "n_examples": 40}]}]
    assert data["features"][3]["explanations"] == []
    other = connect(":memory:")
    build_report_store(other, n_features=48, labels=False)
    assert import_report(other, path) == ("topk-demo", 3)  # 1 and 2 labelled and explained, 3 explained
    assert _rows(other) == _rows(store)
    assert other.execute("SELECT feature, label FROM feature_labels ORDER BY feature").fetchall() == [
        (1, "cat and dog"), (2, HOSTILE_LABEL)]
    again = collect_report(other, "topk-demo", Selection(features=FEATURES))
    assert [e.explanations for e in again.features] == [e.explanations for e in report.features]


def test_a_report_without_explanations_wipes_none(store, tmp_path):
    bare = connect(":memory:")
    build_report_store(bare, n_features=48)
    path = write_report(collect_report(bare, "topk-demo", Selection(features=FEATURES)), "json",
                        tmp_path / "bare.json")[0]
    assert all(f["explanations"] == [] for f in json.loads(path.read_text())["features"])
    before = _rows(store)
    import_report(store, path)
    assert _rows(store) == before
    old = json.loads(path.read_text())  # a report written before explanations were exported
    for feature in old["features"]:
        del feature["explanations"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    import_report(store, tmp_path / "old.json")
    assert _rows(store) == before


def test_import_replaces_only_the_same_explainers_explanation(store, tmp_path):
    report = collect_report(store, "topk-demo", Selection(features=(1,)))
    data = json.loads(write_report(report, "json", tmp_path / "r.json")[0].read_text())
    data["features"][0]["explanations"] = [{"explainer": "patterns", "text": "' kitten'", "scores": [
        {"scorer": "detection", "metric": "accuracy", "value": 0.5, "baseline": None, "n_examples": 3}]}]
    (tmp_path / "edited.json").write_text(json.dumps(data))
    write_batch(store, "topk-demo", "llm", [ExplanationRow(1, "llm", "cats")], [], [], [1])
    import_report(store, tmp_path / "edited.json")
    explanations, scores = _rows(store)
    assert [e for e in explanations if e[0] == 1] == [(1, "llm", "cats"), (1, "patterns", "' kitten'")]
    assert [s for s in scores if s[0] == 1] == [(1, "patterns", "detection", "accuracy", 0.5, None, 3)]


@pytest.mark.parametrize("bad", [
    {"explainer": "", "text": "x", "scores": []},
    {"explainer": "patterns", "text": "  ", "scores": []},
    {"explainer": "patterns", "text": "x", "scores": [{"scorer": "detection", "metric": "f1", "value": "high",
                                                      "baseline": None, "n_examples": 3}]},
    {"explainer": "patterns", "text": "x", "scores": [{"scorer": "detection", "metric": "f1", "value": 0.5,
                                                      "baseline": None, "n_examples": -1}]},
    "just text",
])
def test_a_malformed_explanation_writes_nothing(store, tmp_path, bad):
    data = json.loads(write_report(collect_report(store, "topk-demo", Selection(features=(4,))), "json",
                                   tmp_path / "r.json")[0].read_text())
    data["features"][0]["explanations"] = [bad]
    data["features"][0]["label"] = "would be written"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    before = _rows(store)
    with pytest.raises(InputError, match="malformed explanation of feature 4 in report"):
        import_report(store, tmp_path / "bad.json")
    assert _rows(store) == before
    assert store.execute("SELECT count(*) FROM feature_labels WHERE feature = 4").fetchone()[0] == 0


def test_markdown_shows_escaped_explanations_under_the_label(store):
    text, _ = render_markdown(collect_report(store, "topk-demo", Selection(features=FEATURES)), with_images=False)
    assert "<script>" not in text and "*star*" not in text and "[link](http" not in text
    assert ("**Explanation** (llm): \\<script\\>alert('x')\\</script\\> &amp; \"quotes\" \\*star\\* \\_under\\_ "
            "\\[link\\](http://x) \\| pipe \\`tick\\` \\# hash") in text
    card = text[text.index("## Feature 1: cat and dog"):text.index('<a id="f-2">')]
    assert card.index("fires on pets") < card.index("**Explanation** (patterns): ' cat'; 90% of firings")
    assert "| detection | balanced\\_accuracy | 0.875 | 0.500 | 40 |" in card
    assert "| simulation | correlation | 0.750 | -0.062 | 40 |" in card
    assert "| detection | precision | – | 0.250 | 12 |" in text  # undefined metric
    feature_4 = text[text.index("## Feature 4:"):]
    assert "**Explanation**" not in feature_4


def test_html_shows_escaped_explanations_under_the_label(store):
    html = render_html(collect_report(store, "topk-demo", Selection(features=FEATURES)))
    assert HOSTILE_TEXT not in html and "<script>alert" not in html
    assert ("<b>Explanation</b> <span class=\"muted\">(llm)</span>: &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; "
            "&amp; &quot;quotes&quot; *star* _under_ [link](http://x) | pipe `tick` # hash") in html
    card = html[html.index('<section class="card" id="f-1">'):html.index('<section class="card" id="f-2">')]
    assert card.index("cat and dog") < card.index("fires on pets") < card.index("&#x27; cat&#x27;; 90% of firings")
    assert ('<tr><td>detection</td><td>balanced_accuracy</td><td class="num">0.875</td><td class="num">0.500</td>'
            '<td class="num">40</td></tr>') in card
    later = html[html.index('<section class="card" id="f-4">'):]
    assert 'class="expl"' not in later[:later.index("</section>")]


def test_neuronpedia_explanation_records(store, tmp_path):
    out, n = export_neuronpedia(store, "topk-demo", tmp_path / "np", features=(1, 2, 3, 4, 6), batch_size=3)
    assert n == 5
    first = [json.loads(line) for line in gzip.decompress((out / "explanations" / "batch-0.jsonl.gz").read_bytes())
             .decode().splitlines()]
    head = {"modelId": "tiny-demo", "layer": "1-topk-demo"}
    assert first == [
        {**head, "index": "1", "description": "cat and dog", "typeName": "sparsescope-label",
         "explanationModelName": "user", "notes": "fires on pets\nsecond line", "scores": []},
        {**head, "index": "1", "description": "' cat'; 90% of firings", "typeName": "sparsescope-patterns",
         "explanationModelName": "patterns", "notes": None, "scores": [
             {"explanationScoreTypeName": "sparsescope-detection-balanced_accuracy",
              "explanationScoreModelName": "sparsescope-detection", "value": 0.875,
              "jsonDetails": '{"baseline": 0.5, "n_examples": 40}'},
             {"explanationScoreTypeName": "sparsescope-simulation-correlation",
              "explanationScoreModelName": "sparsescope-simulation", "value": 0.75,
              "jsonDetails": '{"baseline": -0.0625, "n_examples": 40}'}]},
        {**head, "index": "2", "description": HOSTILE_LABEL, "typeName": "sparsescope-label",
         "explanationModelName": "user", "notes": "<b>bold?</b>", "scores": []},
        {**head, "index": "2", "description": "' dog' after ' the'; 40% of firings",
         "typeName": "sparsescope-patterns", "explanationModelName": "patterns", "notes": None, "scores": [
             {"explanationScoreTypeName": "sparsescope-detection-balanced_accuracy",
              "explanationScoreModelName": "sparsescope-detection", "value": 0.625,
              "jsonDetails": '{"baseline": 0.5, "n_examples": 30}'}]},
        {**head, "index": "3", "description": HOSTILE_TEXT, "typeName": "sparsescope-llm",
         "explanationModelName": "llm", "notes": None, "scores": [  # precision undefined: left out
             {"explanationScoreTypeName": "sparsescope-detection-recall",
              "explanationScoreModelName": "sparsescope-detection", "value": 0.5,
              "jsonDetails": '{"baseline": null, "n_examples": 12}'}]}]
    # batch 1 holds features 4 (nothing) and 6 (notes but no label): no explanation file for it
    assert sorted(p.name for p in (out / "explanations").iterdir()) == ["batch-0.jsonl.gz"]
    assert sorted(p.name for p in out.glob("batch-*.json")) == ["batch-0.json", "batch-1.json"]
