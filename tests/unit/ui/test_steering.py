"""Steering page: deep link, a streamed run side by side with its measures, stored and re-run, sweep, bad input."""
import json

import duckdb
import numpy as np
import pytest

from tests.ui_store import HOOK, open_page, texts

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


def _more(at, *rows):
    """Fill the "more interventions" rows: (target, mode, strength, value, hook) each."""
    _by_label(at.number_input, "more interventions").set_value(len(rows)).run()
    for number, (target, mode, strength, value, hook) in enumerate(rows, start=2):
        _by_label(at.text_input, f"target {number}").set_value(target)
        _by_label(at.selectbox, f"mode {number}").set_value(mode)
        _by_label(at.number_input, f"strength {number}").set_value(strength)
        if value is not None:
            _by_label(at.number_input, f"value {number}").set_value(value)
        if hook:
            _by_label(at.text_input, f"hook {number}").set_value(hook)
    return at


def test_several_interventions_with_the_new_modes_and_top_p(ui_ws):
    np.save(ui_ws / "away.npy", np.linspace(-1.0, 1.0, 64))
    at = _ready(dict="topk-demo", feature=3, mode="orthogonal")
    _by_label(at.slider, "top-p").set_value(0.5)
    _more(at, ("mp-demo:5", "cap", 1.0, -0.5, ""), ("2*topk-demo:1 - mp-demo:4", "add", 3.0, None, ""),
          ("away.npy", "orthogonal", 0.0, None, HOOK))
    _by_label(at.button, "Steer").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "stored as steering run 1" in texts(at)
    (_, _, config), = _stored(ui_ws)
    config = json.loads(config)
    ivs = config["interventions"]
    assert [(i["mode"], i["dictionary"], i["feature"]) for i in ivs] == [
        ("orthogonal", "topk-demo", 3), ("cap", "mp-demo", 5), ("add", None, None), ("orthogonal", None, None)]
    assert ivs[1]["value"] == -0.5 and ivs[2]["hook"] == ivs[3]["hook"] == HOOK
    assert len(ivs[2]["direction"]) == 64 and ivs[3]["direction"][0] == -1.0
    assert config["top_p"] == 0.5
    shown = at.dataframe[0].value  # every target's activation when there are several
    assert list(shown["target"]) == ["topk-demo:3", "mp-demo:5", f"direction@{HOOK}"]


@pytest.mark.parametrize("mode, rows, needle", [
    ("cap", (), "cap needs a value"),
    ("add", (("nope:1", "add", 1.0, None, ""),), "unknown dictionary 'nope'"),
    ("add", (("2* topk-demo", "add", 1.0, None, ""),), "as a direction: use DICT"),
    ("add", (("topk-demo:1 - topk-demo:1", "add", 1.0, None, ""),), "the combination is the zero vector"),
    ("add", (("../outside.npy", "add", 1.0, None, HOOK),), "outside the workspace"),
    ("add", (("away.npy", "add", 1.0, None, ""),), "a direction from a file needs its hook"),
    ("add", (("mp-demo:1", "cap", 1.0, None, ""),), "intervention 2: cap needs a value"),
    ("add", (("", "add", 1.0, None, ""),), "intervention 2: it has no target"),
])
def test_bad_interventions_are_one_error_and_store_nothing(ui_ws, mode, rows, needle):
    at = _ready(dict="topk-demo", feature=3, mode=mode)
    _more(at, *rows)
    _by_label(at.button, "Steer").click().run()
    assert not at.exception
    assert len(at.error) == 1 and needle in at.error[0].value, [e.value for e in at.error]
    assert _stored(ui_ws) == []


def test_unknown_mode_in_the_link_names_the_new_modes(ui_ws):
    at = open_page(PAGE, dict="topk-demo", feature=1, mode="boost")
    assert not at.exception and len(at.error) == 1
    assert "choose from add, clamp, ablate, orthogonal, cap" in at.error[0].value
