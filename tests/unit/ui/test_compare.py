"""Compare page: two dictionaries on one site matched by decoder cosine."""
import numpy as np

from tests.ui_store import open_page, texts

PAGE = "views/compare.py"


def test_matching_histogram_and_unmatched_features_of_each_side(ui_ws):
    at = open_page(PAGE, a="topk-demo", b="mp-demo")
    assert not at.exception and not at.error
    assert [m.value for m in at.metric[:2]] == ["hungarian", "384"]
    assert at.get("plotly_chart")
    left = at.dataframe[0].value
    assert "features of topk-demo" in texts(at) and "features of mp-demo" in texts(at)
    # random dictionaries: nothing matches at 0.7; at cos >= 0 almost everything does
    assert len(left) == 384 and (left["partner cos"] < 0.7).all()
    assert list(left["partner cos"]) == sorted(left["partner cos"])  # worst match first
    assert np.all(left["open"] == [f"feature?dict=topk-demo&feature={f}" for f in left["feature"]])
    at.slider[0].set_value(0.0).run()
    left = at.dataframe[0].value
    assert len(left) < 384 and (left["partner cos"].fillna(-1) < 0).all()


def test_different_sizes_leave_features_without_partner(ui_ws):
    at = open_page(PAGE, a="codebook-demo", b="topk-demo")
    assert not at.exception and not at.error
    at.slider[0].set_value(0.0).run()
    right = at.dataframe[1].value  # topk has 128 more features than the codebook
    assert right["partner"].isna().sum() == 128


def test_bad_dictionary_parameters_are_one_error_line(ui_ws):
    at = open_page(PAGE, a="nope")
    assert not at.exception and at.error[0].value.startswith("unknown dictionary 'nope'")
