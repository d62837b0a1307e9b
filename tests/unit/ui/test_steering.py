"""Steering page: deep link, a streamed run side by side with its measures, stored and re-run, sweep, bad input."""
import duckdb
import pytest

from tests.ui_store import open_page, texts

PAGE = "views/steering.py"


pytestmark = pytest.mark.usefixtures("one_thread")


def _by_label(widgets, label: str):
    return next(w for w in widgets if w.label.startswith(label))


def _ready(**params):
    """The page with a short raw completion set up (tiny-random has no chat template)."""
    at = open_page(PAGE, **params)
    assert not at.exception and not at.error
    _by_label(at.toggle, "chat template").set_value(False)
    _by_label(at.slider, "new tokens").set_value(4)
    return at


def _stored(root) -> list[tuple]:
    con = duckdb.connect(str(root / "sparsescope.duckdb"), read_only=True)
    try:
        return con.execute("SELECT id, steered_texts, config FROM steering_runs ORDER BY id").fetchall()
    finally:
        con.close()


def test_deep_link_steer_store_and_rerun(ui_ws):
    at = _ready(dict="mp-demo", feature=5)
    assert at.selectbox[0].value == "mp-demo" and at.number_input[0].value == 5
    _by_label(at.button, "Steer").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    shown = texts(at)
    assert "**default**" in shown and "**steered**" in shown and "stored as steering run 1" in shown
    assert len(at.code) == 4  # two samples per arm
    assert any(m.label.startswith("KL") for m in at.metric)
    (first,) = _stored(ui_ws)
    _by_label(at.button, "Re-run").click().run()  # sets the run to repeat and reruns the page
    assert not at.exception and not at.error
    assert "Re-run of run 1" in texts(at)
    second = _stored(ui_ws)[1]
    assert second[1] == first[1] and second[2] == first[2]


def test_sweep_plots_and_stores_every_strength(ui_ws):
    at = _ready(dict="topk-demo", feature=3)
    at.text_input[0].set_value("0,6")
    _by_label(at.button, "Run sweep").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 1
    assert "strength 0:" in texts(at) and len(_stored(ui_ws)) == 2


@pytest.mark.parametrize("setup, needle", [
    (lambda at: at.text_area[0].set_value("   "), "the prompt is empty"),
    (lambda at: _by_label(at.toggle, "chat template").set_value(True), "no chat template"),
    (lambda at: at.text_area[0].set_value("z" * 300), "context of 256 tokens"),
    (lambda at: at.number_input[0].set_value(5000), "feature 5000 is not in dictionary"),
])
def test_bad_input_is_one_error_and_stores_nothing(ui_ws, setup, needle):
    at = _ready(dict="codebook-demo", feature=1)
    setup(at)
    _by_label(at.button, "Steer").click().run()
    assert not at.exception
    assert len(at.error) == 1 and needle in at.error[0].value
    assert _stored(ui_ws) == []


def test_unknown_dictionary_in_the_link_is_one_error(ui_ws):
    at = open_page(PAGE, dict="nope", feature=1)
    assert not at.exception and len(at.error) == 1 and "unknown dictionary 'nope'" in at.error[0].value
