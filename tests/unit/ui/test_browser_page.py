"""Feature browser: paged table, searches, bad query parameters."""
from tests.ui_store import open_page, texts

PAGE = "views/browser.py"


def test_the_table_pages_through_features_sorted_by_a_column(ui_ws):
    at = open_page(PAGE, dict="topk-demo")
    assert not at.exception and not at.error
    assert at.selectbox[0].value == "topk-demo"
    table = at.dataframe[0].value
    assert len(table) == 50 and list(table["density"]) == sorted(table["density"], reverse=True)
    assert {"feature", "density", "max act", "top tokens", "label", "open"} <= set(table.columns)
    assert table["open"].iloc[0] == f"feature?dict=topk-demo&feature={table['feature'].iloc[0]}"
    at.selectbox[1].set_value("feature").run()
    at.toggle[0].set_value(False).run()
    at.number_input[0].set_value(2).run()
    assert list(at.dataframe[0].value["feature"]) == list(range(50, 100))


def test_search_by_label_token_and_density(ui_ws):
    at = open_page(PAGE, dict="topk-demo")
    at.segmented_control[0].set_value("label").run()
    at.text_input[0].set_value("FIRST letters").run()
    assert not at.exception and list(at.dataframe[0].value["feature"]) == [1]
    at.segmented_control[0].set_value("fires on token").run()
    at.text_input[0].set_value("e").run()
    assert not at.exception and len(at.dataframe[0].value) > 0
    at.segmented_control[0].set_value("promotes token").run()
    at.text_input[0].set_value("zzz-no-such-token").run()
    assert not at.exception and "No feature matches" in texts(at)
    at.segmented_control[0].set_value("density").run()
    at.number_input[0].set_value(0.0).run()
    at.number_input[1].set_value(0.0).run()
    dead = at.dataframe[0].value
    assert not at.exception and (dead["density"] == 0).all() and len(dead) > 0


def test_find_by_id_links_to_the_feature_page(ui_ws):
    at = open_page(PAGE, dict="mp-demo")
    at.segmented_control[0].set_value("id").run()
    at.text_input[0].set_value("7").run()
    assert "open feature #7" in texts(at)
    at.text_input[0].set_value("seven").run()
    assert not at.exception and at.error[0].value == "feature id must be a whole number, got 'seven'"
    at.text_input[0].set_value("100000").run()
    assert not at.exception and "out of range" in at.error[0].value


def test_an_unknown_dictionary_is_one_error_line(ui_ws):
    at = open_page(PAGE, dict="nope")
    assert not at.exception
    assert [e.value for e in at.error] == ["unknown dictionary 'nope' (analysed: codebook-demo, mp-demo, topk-demo)"]
