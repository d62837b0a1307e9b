"""Explanations in the UI: on the feature page (scores beside their baselines, the label above, a hint when there
is none), and the search of features by the words of their explanations and labels (/search?words=...), every
explanation shown as text."""
import pytest

from app.ui.widgets.common import md_escape
from store import session
from store.explanations import ExplanationRow, ScoreRow, explanations_of, write_batch
from store.queries import set_label
from tests.helpers import HOSTILE, assert_literal, rendered_markdown
from tests.ui_store import open_page, texts

FEATURE = "views/feature.py"
SEARCH = "views/search.py"
BROWSER = "views/browser.py"
DANGER = {"image", "link_open", "html_inline", "html_block", "bare_link", "shortcode", "math", "directive"}
pytestmark = pytest.mark.usefixtures("one_thread")


def _explained(root, dictionary="topk-demo"):
    """feature -> its Explained rows, of every explained feature of `dictionary`."""
    with session(root / "sparsescope.duckdb") as con:
        return explanations_of(con, dictionary, list(range(384)))


def _plant(root, dictionary, feature, text, value=0.8, baseline=0.5, n=40):
    """A `patterns` explanation of one feature with a detection balanced accuracy."""
    with session(root / "sparsescope.duckdb") as con:
        write_batch(con, dictionary, "patterns", [ExplanationRow(feature, "patterns", text)],
                    [ScoreRow(feature, "detection", "balanced_accuracy", value, baseline, n)], ["detection"], [feature])


def test_the_feature_page_shows_each_explanation_with_its_scores_and_baselines(explained_ws):
    feature, (item,) = next((f, items) for f, items in _explained(explained_ws).items()
                            if any(s.value is not None and s.baseline is not None for s in items[0].scores))
    at = open_page(FEATURE, dict="topk-demo", feature=feature)
    assert not at.exception and not at.error
    assert "Explanations" in [s.value for s in at.subheader]
    shown = texts(at)
    text, _ = rendered_markdown(f"**patterns**: {md_escape(item.text)}")
    assert any(rendered_markdown(m.value)[0] == text for m in at.markdown)
    ba = next(s for s in item.scores if s.scorer == "detection" and s.metric == "balanced_accuracy")
    sim = next(s for s in item.scores if s.scorer == "simulation")
    assert (f"detection balanced accuracy {ba.value:.2f} (baseline {ba.baseline:.2f}, {ba.n_examples:,} examples)"
            in shown)
    assert f"simulation correlation {sim.value:.2f}" in shown
    assert "your label" not in shown  # no label: nothing above the explanation
    table = at.dataframe[0].value  # every metric in the expander
    assert set(table["metric"]) == {"accuracy", "precision", "recall", "f1", "balanced_accuracy", "correlation"}
    assert "sparsescope explain" not in shown


def test_the_label_comes_above_the_explanation(explained_ws):
    feature = next(iter(_explained(explained_ws)))
    with session(explained_ws / "sparsescope.duckdb") as con:
        set_label(con, "topk-demo", feature, "my capitals")
    at = open_page(FEATURE, dict="topk-demo", feature=feature)
    assert not at.exception and not at.error
    sources = [m.value for m in at.markdown]
    label = sources.index("your label: *my capitals*")
    assert label < next(i for i, s in enumerate(sources) if s.startswith("**patterns**"))


def test_a_feature_without_explanation_gets_the_command_that_makes_one(ui_ws):
    at = open_page(FEATURE, dict="mp-demo", feature=3)
    assert not at.exception and not at.error
    hints = [c.value for c in at.caption if "no explanation yet" in c.value]
    assert hints == ["no explanation yet: `sparsescope explain mp-demo` writes one for every feature that fires"]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_hostile_explanation_renders_as_text(ui_ws, hostile):
    _plant(ui_ws, "topk-demo", 4, hostile)
    at = open_page(FEATURE, dict="topk-demo", feature=4)
    assert not at.exception and not at.error
    (source,) = [m.value for m in at.markdown if m.value.startswith("**patterns**")]
    assert_literal(source.removeprefix("**patterns**: "), *[line.strip() for line in hostile.splitlines()][:1])
    assert "detection balanced accuracy 0.80 (baseline 0.50, 40 examples)" in texts(at)


# ------------------------------------------------------------------------------------------- feature browser

def _balanced(root) -> dict[int, float]:
    """feature -> detection balanced accuracy of topk-demo's patterns explanations (defined ones)."""
    with session(root / "sparsescope.duckdb") as con:
        return dict(con.execute("SELECT feature, value FROM explanation_scores WHERE dictionary = 'topk-demo' AND "
                                "scorer = 'detection' AND metric = 'balanced_accuracy' AND value IS NOT NULL"
                                ).fetchall())


def test_the_browser_table_has_an_explanation_column(explained_ws):
    texts_of = {f: items[0].text for f, items in _explained(explained_ws).items()}
    at = open_page(BROWSER, dict="topk-demo")
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert "explanation" in table.columns
    assert {f: t for f, t in zip(table["feature"], table["explanation"]) if t} == \
        {f: texts_of[f] for f in table["feature"] if f in texts_of}
    assert any(table["explanation"] != "")


def test_the_browser_sorts_and_filters_by_a_score_with_the_choice_in_the_url(explained_ws):
    values = _balanced(explained_ws)
    at = open_page(BROWSER, dict="topk-demo")
    at.segmented_control[0].set_value("explanation score").run()
    assert not at.exception and not at.error
    assert at.selectbox[1].value == "patterns.detection.balanced_accuracy"  # the scorer's headline by default
    table = at.dataframe[0].value
    best = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:50]
    assert list(zip(table["feature"], table["score"])) == best
    assert {"baseline", "examples", "explanation", "label", "open"} <= set(table.columns)
    cut = sorted(values.values())[len(values) // 2]
    at.number_input[0].set_value(cut).run()
    at.toggle[0].set_value(False).run()  # worst first
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    above = sorted((v, f) for f, v in values.items() if v >= cut)[:50]
    assert list(zip(table["score"], table["feature"])) == above and min(table["score"]) >= cut
    assert dict(at.query_params) == {"dict": "topk-demo", "mode": "score", "min": str(cut), "order": "asc",
                                     "score": "patterns.detection.balanced_accuracy"}
    link = open_page(BROWSER, **dict(at.query_params))  # the URL opens the same view
    assert not link.exception and not link.error
    assert list(link.dataframe[0].value["feature"]) == list(table["feature"])
    at.selectbox[1].set_value("patterns.simulation.correlation").run()
    assert at.query_params["score"] == "patterns.simulation.correlation" and not at.exception
    at.segmented_control[0].set_value("all").run()  # other modes drop the score's parameters
    assert dict(at.query_params) == {"dict": "topk-demo"}


@pytest.mark.parametrize("params, message", [
    ({"mode": "score", "score": "patterns.fuzz.accuracy"}, "unknown score 'patterns.fuzz.accuracy' for topk-demo"),
    ({"mode": "score", "min": "high"}, "min must be a number, got 'high'"),
    ({"mode": "scores"}, "unknown mode 'scores' (the URL takes mode=score)"),
])
def test_bad_score_parameters_are_one_error(explained_ws, params, message):
    at = open_page(BROWSER, dict="topk-demo", **params)
    assert not at.exception and len(at.error) == 1 and at.error[0].value.startswith(message)


def test_a_dictionary_without_scores_says_how_to_get_them(ui_ws):
    at = open_page(BROWSER, dict="mp-demo", mode="score")
    assert not at.exception and not at.error and not at.dataframe
    assert "`sparsescope explain mp-demo` explains and scores" in texts(at)


# ------------------------------------------------------------------------------------------- word search

def test_words_find_features_across_dictionaries_ranked_with_links(ui_ws):
    _plant(ui_ws, "topk-demo", 7, "' Paris', ' London' after ' in'; 62% of firings")
    _plant(ui_ws, "mp-demo", 9, "' paris'; 80% of firings")
    _plant(ui_ws, "codebook-demo", 2, "' Parish'; 40% of firings")
    with session(ui_ws / "sparsescope.duckdb") as con:
        set_label(con, "mp-demo", 11, "Paris and London", "")
    at = open_page(SEARCH, words="PARIS london")
    assert not at.exception and not at.error
    links = [link.proto for link in at.get("page_link")]
    assert all(link.page == "feature" for link in links)
    # both words (the label first), then one word (whole word before part of a word)
    assert [link.query_string for link in links] == [
        "dict=mp-demo&feature=11", "dict=topk-demo&feature=7", "dict=mp-demo&feature=9",
        "dict=codebook-demo&feature=2"]
    assert links[0].label == "mp-demo #11 \u00b7 Paris and London"
    assert "' Paris', ' London' after ' in'; 62% of firings" in texts(at).replace("\\", "")
    followed = open_page(FEATURE, dict="mp-demo", feature=11)  # where the first link leads
    assert not followed.exception and "Paris and London" in texts(followed)


def test_the_word_form_puts_words_and_dictionary_in_the_url(ui_ws):
    _plant(ui_ws, "topk-demo", 7, "' cat'; 90% of firings")
    _plant(ui_ws, "mp-demo", 9, "' cat'; 80% of firings")
    at = open_page(SEARCH, text="a leftover text")
    at.segmented_control[0].set_value("words").run()
    assert not at.exception and not at.error and "press Search" in texts(at)
    at.text_input[0].set_value("CAT")
    at.selectbox[0].set_value("mp-demo")
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert dict(at.query_params) == {"words": "CAT", "dict": "mp-demo"}
    assert [link.proto.query_string for link in at.get("page_link")] == ["dict=mp-demo&feature=9"]
    again = open_page(SEARCH, words="CAT", dict="mp-demo")  # the link opens the same view
    assert [link.proto.query_string for link in again.get("page_link")] == ["dict=mp-demo&feature=9"]


@pytest.mark.parametrize("params", [{"words": ""}, {"words": "   "}])
def test_an_empty_word_search_is_one_error(ui_ws, params):
    at = open_page(SEARCH, **params)
    assert not at.exception and [e.value for e in at.error] == [
        "type at least one word to look for in explanations and labels"]


def test_words_that_match_nothing_say_how_to_explain_more(ui_ws):
    at = open_page(SEARCH, words="zebra")
    assert not at.exception and not at.error and not at.get("page_link")
    assert "sparsescope explain" in texts(at)


def test_an_unknown_dictionary_of_the_word_search_is_one_error(ui_ws):
    at = open_page(SEARCH, words="cat", dict="nope")
    assert not at.exception
    assert [e.value for e in at.error] == ["unknown dictionary 'nope' (analysed: codebook-demo, mp-demo, topk-demo)"]


def test_hostile_explanations_and_labels_in_word_results_render_as_text(ui_ws):
    for i, hostile in enumerate(HOSTILE):
        _plant(ui_ws, "topk-demo", 20 + i, f"evil {hostile}")
        with session(ui_ws / "sparsescope.duckdb") as con:
            set_label(con, "mp-demo", 20 + i, f"evil {hostile}")
    at = open_page(SEARCH, words="evil")
    assert not at.exception and not at.error
    assert len(at.get("page_link")) == 2 * len(HOSTILE)
    sources = [str(e.value) for kind in ("markdown", "caption", "info") for e in at.get(kind)]
    sources += [e.proto.label for e in at.get("page_link")]
    for source in sources:
        assert not rendered_markdown(source)[1] & DANGER, source


def test_second_words_typed_after_a_search_are_the_ones_searched(ui_ws):
    """The words of the first search become the box's default (the URL): the next words typed must be searched."""
    _plant(ui_ws, "topk-demo", 7, "' cat'; 90% of firings")
    _plant(ui_ws, "mp-demo", 9, "' dog'; 80% of firings")
    at = open_page(SEARCH, words="cat")
    for words, link in (("dog", "dict=mp-demo&feature=9"), ("cat", "dict=topk-demo&feature=7")):
        at.text_input[0].set_value(words)
        at.button[0].click().run()
        assert not at.exception and not at.error
        assert at.query_params["words"] == words
        assert [link.proto.query_string for link in at.get("page_link")] == [link]
