"""Heads page: heatmap, deep link to a head, pattern (full and compact), contexts, ablation, ranking, bad input."""
import pytest

from tests.factories import saved_dictionary
from tests.ui_store import open_page, texts

PAGE = "views/heads.py"


pytestmark = pytest.mark.usefixtures("one_thread")


def _widget(widgets, label: str):
    return next(w for w in widgets if w.label == label)


def _ok(at):
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_no_scan_says_which_command_to_run(ui_ws):
    at = open_page(PAGE)
    _ok(at)
    assert "sparsescope heads" in at.info[0].value


def test_deep_link_opens_the_head_with_heatmap_pattern_contexts_and_ablation(heads_ws):
    at = open_page(PAGE, layer=1, head=2, score="prev_token", prompt="the cat sat on the mat")
    _ok(at)
    assert (_widget(at.selectbox, "layer").value, _widget(at.selectbox, "head").value) == (1, 2)
    shown = texts(at)
    assert "Head 1.2" in shown and "KV group 2" in shown
    assert len(at.get("plotly_chart")) >= 2  # the score grid and the pattern
    assert {m.label for m in at.metric} >= {"prev_token", "induction_random", "entropy", "loss clean"}
    assert "context " in shown and "score " in shown  # top-attending contexts
    assert at.query_params["layer"] == "1" and at.query_params["head"] == "2"


def test_changing_the_head_and_the_ablation_mode(heads_ws):
    at = open_page(PAGE, layer=0, head=0)
    _ok(at)
    _widget(at.selectbox, "head").set_value(3).run()
    _ok(at)
    assert "Head 0.3" in texts(at) and at.query_params["head"] == "3"
    for mode in ("mean", "path"):
        _widget(at.radio, "ablation").set_value(mode).run()
        _ok(at)
        assert any(m.label == "loss ablated" for m in at.metric)


def test_long_prompts_get_the_compact_view_and_ranking_works(heads_ws):
    at = open_page(PAGE, layer=0, head=1, prompt="abc " * 20)
    _ok(at)
    assert "compact view of the last 40 destinations" in texts(at)
    _widget(at.toggle, "rank every head (zero-ablation, one batch per layer)").set_value(True).run()
    _ok(at)
    assert "logit change" in at.dataframe[-1].value.columns


@pytest.mark.parametrize("params, needle", [
    ({"layer": 5, "head": 0}, "layer 5 is out of range"),
    ({"layer": 0, "head": 4}, "head 4 is out of range"),
    ({"layer": "x"}, "layer must be a whole number"),
    ({"model": "nope", "corpus": "c"}, "no head scores for model 'nope'"),
    ({"prompt": "a" * 300}, "beyond the model's context"),
])
def test_bad_input_is_one_error(heads_ws, params, needle):
    at = open_page(PAGE, **params)
    assert not at.exception
    assert len(at.error) == 1 and needle in at.error[0].value


def test_empty_prompt_is_an_error(heads_ws):
    at = open_page(PAGE, layer=0, head=0)
    _widget(at.text_area, "prompt").set_value("   ").run()
    assert not at.exception and "the prompt is empty" in at.error[0].value


def _attribution_script():
    import os
    from pathlib import Path

    from app.ui.widgets.heads import head_attribution_section
    from store.dictionaries import DictionaryRow

    path = os.environ["HEADS_TEST_DICT"]
    row = DictionaryRow(name="attn", model="tiny-random", hook="blocks.1.attn.hook_z", arch="topk", d_in=64,
                        d_sae=32, k=4, path=str(Path(path)))
    head_attribution_section(row, 3)


def test_head_attribution_widget_for_the_feature_page(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from store import Workspace, session
    from store.dictionaries import DictionaryRow, add_dictionary

    saved_dictionary(tmp_path / "attn", arch="topk", d_in=64, d_sae=32, k=4, hook_name="blocks.1.attn.hook_z")
    ws = Workspace.resolve(tmp_path / "ws")
    with session(ws.db_path) as con:  # the page opens dictionaries by name from the workspace's store
        add_dictionary(con, DictionaryRow(name="attn", model="tiny-random", hook="blocks.1.attn.hook_z",
                                          arch="topk", d_in=64, d_sae=32, k=4, path=str(tmp_path / "attn")))
    monkeypatch.setenv("SPARSESCOPE_WORKSPACE", str(ws.root))
    monkeypatch.setenv("HEADS_TEST_DICT", str(tmp_path / "attn"))
    at = AppTest.from_function(_attribution_script, default_timeout=120).run()
    _ok(at)
    assert "Head attribution" in texts(at) and len(at.get("plotly_chart")) == 1


@pytest.mark.parametrize("n_kv, ticks", [(None, ["0", "1", "2", "3"]),
                                         (2, ["0 (KV 0)", "1 (KV 0)", "2 (KV 1)", "3 (KV 1)"])])
def test_the_head_attribution_axis_has_one_tick_per_whole_head(n_kv, ticks):
    from app.ui.widgets.heads import head_attribution_figure

    fig = head_attribution_figure([0.1, 0.2, 0.3, 0.4], n_kv)
    axis = fig.layout.xaxis
    assert axis.tickmode == "array" and list(axis.tickvals) == [0, 1, 2, 3] and list(axis.ticktext) == ticks
    assert list(fig.data[0].x) == [0, 1, 2, 3] and list(fig.data[0].customdata) == ticks


def test_a_second_prompt_and_target_typed_are_the_ones_used(heads_ws):
    """The prompt and the target go into the URL, the boxes' defaults: a second edit must not be dropped."""
    at = open_page(PAGE, layer=0, head=0)
    for prompt, target in (("A first prompt", "x"), ("A second, longer prompt", "y")):
        _widget(at.text_area, "prompt").set_value(prompt).run()
        next(w for w in at.text_input if w.label.startswith("target next token")).set_value(target).run()
        _ok(at)
        assert at.query_params["prompt"] == prompt and at.query_params["target"] == target
