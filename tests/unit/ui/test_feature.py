"""Feature page: deep links, what it shows per architecture, label edits, escaping, bad query parameters."""
import pytest

from store import connect
from store.queries import feature_card, set_label
from tests.ui_store import open_page, texts

PAGE = "views/feature.py"


def test_a_deep_link_opens_that_feature(ui_ws):
    at = open_page(PAGE, dict="mp-demo", feature=2)
    assert not at.exception and not at.error
    assert at.selectbox[0].value == "mp-demo" and at.number_input[0].value == 2
    shown = texts(at)
    assert "feature #2" in shown and "pursuit atom" in shown
    con = connect(ui_ws / "sparsescope.duckdb", read_only=True)
    card = feature_card(con, "mp-demo", 2)
    con.close()
    assert at.metric[1].value == f"{card.count:,}"
    # top examples are highlighted token by token, the hover title carries the activation
    assert f'title="{card.top_examples[0].activation:.4g}"' in shown
    assert "Matching pursuit" in shown and "likely parents" in shown
    # neighbours link to their own feature pages
    near = card.decoder_neighbors[0]
    links = {link.value: link.proto for link in at.get("page_link")}
    target = links[f"#{near.id} \u00b7 cos {near.value:.3g}"]
    assert target.page == "feature" and target.query_string == f"dict=mp-demo&feature={near.id}"


def test_codebook_codes_show_their_usage(ui_ws):
    at = open_page(PAGE, dict="codebook-demo", feature=5)
    assert not at.exception and not at.error and "Code usage" in texts(at)


def test_the_url_follows_the_pickers(ui_ws):
    at = open_page(PAGE, dict="topk-demo", feature=3)
    at.number_input[0].set_value(4).run()
    assert not at.exception and at.query_params == {"dict": "topk-demo", "feature": "4"}
    assert "feature #4" in texts(at)


def test_a_label_edit_persists_to_the_store(ui_ws):
    at = open_page(PAGE, dict="topk-demo", feature=3)
    at.text_input[0].set_value("quotes")
    at.text_area[0].set_value("fires inside quotation marks")
    at.button[0].click().run()
    assert not at.exception and not at.error
    con = connect(ui_ws / "sparsescope.duckdb", read_only=True)
    row = con.execute("SELECT label, notes FROM feature_labels WHERE dictionary = 'topk-demo' AND feature = 3")
    assert row.fetchone() == ("quotes", "fires inside quotation marks")
    con.close()
    assert "quotes" in texts(at)  # the page shows the new label after saving


def test_a_script_label_is_shown_as_text(ui_ws):
    con = connect(ui_ws / "sparsescope.duckdb")
    set_label(con, "topk-demo", 8, "<script>alert(1)</script>", "<img src=x onerror=alert(2)>")
    con.close()
    at = open_page(PAGE, dict="topk-demo", feature=8)
    assert not at.exception
    html = "\n".join(e.value for e in at.html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script" not in html and "<img" not in html
    assert at.text_input[0].value == "<script>alert(1)</script>"  # the input holds the raw text


@pytest.mark.parametrize("params, message", [
    ({"dict": "topk-demo", "feature": "abc"}, "feature must be a whole number, got 'abc'"),
    ({"dict": "topk-demo", "feature": "-3"}, "feature must not be negative, got -3"),
    ({"dict": "topk-demo", "feature": "384"}, "feature 384 is out of range: topk-demo has features 0..383"),
    ({"dict": "nope", "feature": "1"}, "unknown dictionary 'nope' (analysed: codebook-demo, mp-demo, topk-demo)"),
])
def test_bad_query_parameters_are_one_error_line(ui_ws, params, message):
    at = open_page(PAGE, **params)
    assert not at.exception
    assert [e.value for e in at.error] == [message]


def test_without_parameters_the_first_feature_opens(ui_ws):
    at = open_page(PAGE)
    assert not at.exception and not at.error and "feature #0" in texts(at)
