"""Steer by words on the Steering page: a description proposes the features whose explanations or labels match it,
the accepted ones are steered together with the usual measures, and the page says whether their mean activation
rose; the description in the URL; a description that matches nothing is one error."""
import json

import pytest

from store import connect, session
from store.explanations import ExplanationRow, write_batch
from tests.helpers import HOSTILE, rendered_markdown
from tests.ui_store import open_page, texts

PAGE = "views/steering.py"
DANGER = {"image", "link_open", "html_inline", "html_block", "bare_link", "shortcode", "math", "directive"}
pytestmark = pytest.mark.usefixtures("one_thread")


def _by_label(widgets, label: str):
    return next(w for w in widgets if w.label.startswith(label))


def _live(root, n: int, dictionary: str = "topk-demo") -> list[tuple[int, float]]:
    """(feature, max_act) of the n strongest features that fired."""
    with session(root / "sparsescope.duckdb") as con:
        return con.execute("SELECT feature, max_act FROM features WHERE dictionary = ? AND count > 0 "
                           "ORDER BY count DESC, feature LIMIT ?", [dictionary, n]).fetchall()


def _explain(root, texts_by_feature: dict[int, str], dictionary: str = "topk-demo") -> None:
    with session(root / "sparsescope.duckdb") as con:
        write_batch(con, dictionary, "patterns",
                    [ExplanationRow(f, "patterns", t) for f, t in texts_by_feature.items()], [], [], [])


def _runs(root, measures: bool = False) -> list[dict]:
    """The stored steering runs' configs (or measures)."""
    con = connect(root / "sparsescope.duckdb", read_only=True)
    try:
        rows = con.execute("SELECT config, measures FROM steering_runs ORDER BY id").fetchall()
    finally:
        con.close()
    return [json.loads(row[1 if measures else 0]) for row in rows]


def _ready(**params):
    at = open_page(PAGE, **params)
    assert not at.exception and not at.error, [e.value for e in at.error]
    _by_label(at.toggle, "chat template").set_value(False)  # tiny-random has no chat template
    _by_label(at.slider, "new tokens").set_value(4)
    return at


def test_a_description_proposes_its_features_and_steers_with_them(ui_ws):
    (best, best_max), (other, _) = _live(ui_ws, 2)
    _explain(ui_ws, {best: "' cat', ' cats'; 90% of firings", other: "' dog' after ' cat'; 50% of firings"})
    with session(ui_ws / "sparsescope.duckdb") as con:  # a label outranks an explanation-only match
        con.execute("INSERT INTO feature_labels (dictionary, feature, label, notes) VALUES ('topk-demo', ?, "
                    "'cats', '')", [best])
    at = _ready(dict="topk-demo", feature=0, describe="cat")
    assert at.query_params["describe"] == "cat"
    boxes = [c for c in at.checkbox if c.label.startswith("topk-demo:")]
    assert [c.label.split(" ")[0] for c in boxes] == [f"topk-demo:{best}", f"topk-demo:{other}"]
    assert all(c.value for c in boxes)  # every proposed feature accepted by default
    assert f"= {4 * best_max:.4g} (match" in boxes[0].label  # full strength x its max activation
    links = [link.proto.query_string for link in at.get("page_link")]
    assert f"dict=topk-demo&feature={best}" in links and f"dict=topk-demo&feature={other}" in links
    _by_label(at.button, "Steer toward").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (config,) = _runs(ui_ws)
    assert [(i["mode"], i["dictionary"], i["feature"]) for i in config["interventions"]] == [
        ("add", "topk-demo", best), ("add", "topk-demo", other)]
    assert config["interventions"][0]["strength"] == 4.0 > config["interventions"][1]["strength"]
    table = at.dataframe[-1].value  # the selected features' mean activations, unsteered and steered
    assert list(table["feature"]) == [f"topk-demo:{best}", f"topk-demo:{other}"]
    (measures,) = _runs(ui_ws, measures=True)  # the run's own measures, read without any edit on both texts
    stored = {t["label"]: (t["default"]["mean"], t["steered"]["mean"]) for t in measures["targets"]}
    assert [tuple(row) for row in table.itertuples(index=False)] == [(k, *stored[k]) for k in table["feature"]]
    default, steered = table["mean unsteered"].mean(), table["mean steered"].mean()
    line = (f"the selected features' mean activation on the continuation: {default:.4g} unsteered, "
            f"{steered:.4g} steered")
    verdicts = [s.value for s in at.success] + [w.value for w in at.warning]
    assert verdicts == [f"description met: {line}" if steered > default else f"description not met: {line}"]
    assert any(m.label.startswith("KL") for m in at.metric) and "stored as steering run 1" in texts(at)


def test_only_the_accepted_features_are_steered(ui_ws):
    (first, _), (second, _) = _live(ui_ws, 2)
    _explain(ui_ws, {first: "' cat'; 90% of firings", second: "' cat'; 80% of firings"})
    at = _ready(dict="topk-demo", feature=0, describe="cat", top=2)
    _by_label(at.checkbox, f"topk-demo:{first}").uncheck().run()
    _by_label(at.button, "Steer toward").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (config,) = _runs(ui_ws)
    assert [i["feature"] for i in config["interventions"]] == [second]
    assert list(at.dataframe[-1].value["feature"]) == [f"topk-demo:{second}"]
    _by_label(at.checkbox, f"topk-demo:{second}").uncheck().run()
    _by_label(at.button, "Steer toward").click().run()
    assert not at.exception and [e.value for e in at.error] == ["accept at least one proposed feature"]
    assert len(_runs(ui_ws)) == 1


def test_the_description_box_puts_it_in_the_url(ui_ws):
    _explain(ui_ws, {_live(ui_ws, 1)[0][0]: "' cat'; 90% of firings"})
    at = _ready(dict="topk-demo", feature=0)
    assert "describe" not in at.query_params and not [c for c in at.checkbox if c.label.startswith("topk-demo:")]
    _by_label(at.text_input, "describe").set_value("Cat").run()
    assert not at.exception and not at.error
    assert at.query_params["describe"] == "Cat" and at.query_params["top"] == "3"
    assert [c for c in at.checkbox if c.label.startswith("topk-demo:")]


@pytest.mark.parametrize("description", ["zebra", "the"])
def test_a_description_that_matches_nothing_is_one_error(ui_ws, description):
    at = open_page(PAGE, dict="topk-demo", feature=0, describe=description)
    assert not at.exception and len(at.error) == 1
    assert "sparsescope explain" in at.error[0].value and description in at.error[0].value
    assert _runs(ui_ws) == []


def test_ablate_cannot_steer_toward_a_description(ui_ws):
    _explain(ui_ws, {_live(ui_ws, 1)[0][0]: "' cat'; 90% of firings"})
    at = _ready(dict="topk-demo", feature=0, describe="cat", mode="ablate")
    _by_label(at.button, "Steer toward").click().run()
    assert not at.exception and len(at.error) == 1 and "adds or clamps" in at.error[0].value
    assert _runs(ui_ws) == []


def test_hostile_explanations_in_a_proposal_render_as_text(ui_ws):
    live = _live(ui_ws, len(HOSTILE))
    _explain(ui_ws, {f: f"evil {h}" for (f, _), h in zip(live, HOSTILE)})
    at = open_page(PAGE, dict="topk-demo", feature=0, describe="evil", top=len(HOSTILE))
    assert not at.exception and not at.error
    assert len([c for c in at.checkbox if c.label.startswith("topk-demo:")]) == len(HOSTILE)
    sources = [str(e.value) for kind in ("markdown", "caption") for e in at.get(kind)]
    sources += [e.proto.label for e in at.get("page_link")] + [c.label for c in at.checkbox]
    assert sum("evil" in s for s in sources) >= len(HOSTILE)
    for source in sources:
        assert not rendered_markdown(source)[1] & DANGER, source


def test_a_second_description_typed_is_the_one_proposed_for(ui_ws):
    """The description goes into the URL, which is the box's default: the next description typed must be used."""
    (cat, _), (dog, _) = _live(ui_ws, 2)
    _explain(ui_ws, {cat: "' cat'; 90% of firings", dog: "' dog'; 90% of firings"})
    at = _ready(dict="topk-demo", feature=0)
    for description, feature in (("cat", cat), ("dog", dog)):
        _by_label(at.text_input, "describe").set_value(description).run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert at.query_params["describe"] == description
        proposed = [c.label.split(" ")[0] for c in at.checkbox if c.label.startswith("topk-demo:")]
        assert proposed == [f"topk-demo:{feature}"]
