"""Search by text: the features that fire most on a text per dictionary, each linking to its page, inputs in the URL,
labels shown as text, and bad input one st.error."""
import pytest

from analysis.features.search_text import search_workspace
from app.ui.data import cache
from app.ui.data import search as search_data
from store import Workspace, session
from store.queries import set_label
from tests.helpers import HOSTILE, assert_literal
from tests.ui_store import DICTIONARIES, HOOK, MODEL, open_page, texts

PAGE = "views/search.py"
TEXT = "The quick brown fox jumps over the lazy dog."
pytestmark = pytest.mark.usefixtures("one_thread")


def _expected(ui_ws, top: int = 10):
    return search_workspace(Workspace.resolve(ui_ws), TEXT, MODEL, top=top)


def test_every_dictionary_lists_its_strongest_features_as_links(ui_ws):
    expected = _expected(ui_ws, 5)
    top_feature = next(g for g in expected.groups if g.dictionary == "topk-demo").hits[0].feature
    with session(ui_ws / "sparsescope.duckdb") as con:
        set_label(con, "topk-demo", top_feature, HOSTILE[0])
    at = open_page(PAGE, text=TEXT, model=MODEL, top=5)
    assert not at.exception and not at.error
    assert [s.value for s in at.subheader] == [HOOK.replace("_", "\\_")]
    shown = texts(at)
    for plan in DICTIONARIES:
        assert f"**{plan.name}**" in shown
    links = [link.proto for link in at.get("page_link")]
    assert all(link.page == "feature" for link in links)
    got = [link.query_string for link in links]
    want = [f"dict={g.dictionary}&feature={h.feature}" for g in expected.groups for h in g.hits]
    assert got == want  # every feature, strongest first, in the order of the dictionaries
    label = next(link.label for link in links if link.query_string == f"dict=topk-demo&feature={top_feature}")
    assert_literal(label, "![x](http://evil.example/p.png)")  # the label as text, no image
    highlighted = [h.value for h in at.html]
    assert len(highlighted) == len(want) and all('class="tok"' in h for h in highlighted)
    hit = expected.groups[0].hits[0]
    strongest = max(hit.firings, key=lambda f: f.activation)
    assert f'title="{strongest.activation:.4g}"' in highlighted[0]
    dictionary, feature = (part.split("=")[1] for part in got[0].split("&"))
    followed = open_page("views/feature.py", dict=dictionary, feature=feature)  # where the first link leads
    assert not followed.exception and not followed.error and f"#{feature}" in texts(followed)


def test_the_form_puts_its_inputs_in_the_url(ui_ws):
    at = open_page(PAGE)
    assert not at.exception and not at.error and "press Search" in texts(at)
    at.text_area[0].set_value(TEXT)
    at.multiselect[0].set_value(["mp-demo"])
    at.number_input[0].set_value(3)
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert dict(at.query_params) == {"text": TEXT, "model": MODEL, "top": "3", "dicts": "mp-demo"}
    links = [link.proto.query_string for link in at.get("page_link")]
    assert len(links) == 3 and all(link.startswith("dict=mp-demo&") for link in links)


def test_a_shared_link_shows_the_same_dictionaries(ui_ws):
    at = open_page(PAGE, text=TEXT, dicts="codebook-demo", top=2)
    assert not at.exception and not at.error
    assert [link.proto.query_string.split("&")[0] for link in at.get("page_link")] == ["dict=codebook-demo"] * 2


@pytest.mark.parametrize("params, message", [
    ({"text": "   "}, "the text is empty"),
    ({"text": TEXT, "model": "gpt2"}, "no dictionaries for model 'gpt2'"),
    ({"text": TEXT, "dicts": "topk-demo,nope"}, "unknown dictionary 'nope'"),
    ({"text": TEXT, "top": "lots"}, "top must be a whole number"),
    ({"text": TEXT, "top": "500"}, "top must be between 1 and 50"),
])
def test_bad_input_is_one_error(ui_ws, params, message):
    at = open_page(PAGE, **params)
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value
    assert not at.get("page_link")


def test_markdown_in_the_url_is_shown_as_text(ui_ws):
    at = open_page(PAGE, text=HOSTILE[1], model=HOSTILE[0])
    assert not at.exception and len(at.error) == 1
    assert_literal(at.error[0].value, HOSTILE[0])


def test_empty_text_submitted_from_the_form(ui_ws):
    at = open_page(PAGE, text=TEXT)
    at.text_area[0].set_value("")
    at.button[0].click().run()
    assert not at.exception and len(at.error) == 1 and "the text is empty" in at.error[0].value


def test_the_forward_pass_holds_the_model_lock(ui_ws, monkeypatch):
    entered = []
    using = cache.using_model

    def recording(name):
        entered.append(name)
        return using(name)

    monkeypatch.setattr(cache, "using_model", recording)
    search_data.search.clear()
    spec = tuple((p.name, HOOK, cache.stamp(str(ui_ws / "dictionaries" / p.name))) for p in DICTIONARIES)
    result = search_data.search(MODEL, spec, TEXT, 4)
    assert entered == [MODEL] and {g.dictionary for g in result.groups} == {p.name for p in DICTIONARIES}


def test_a_second_text_typed_after_a_search_is_the_one_searched(ui_ws):
    """The first search puts the text in the URL, which is the box's default: the box must keep what is typed next
    rather than turn into a new widget holding the first text (and search it again)."""
    at = open_page(PAGE)
    for text in (TEXT, "A second text, not the first one."):
        at.text_area[0].set_value(text)
        at.button[0].click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert at.query_params["text"] == text and at.text_area[0].value == text
