"""Text from the user, the store or the model is shown as text: a query parameter, a label, a stored prompt or a
workspace path with Markdown in it renders no image, link, HTML, formatting or icon on any page."""
import json

import duckdb
import pytest

from store.queries import set_label
from tests.helpers import HOSTILE, assert_literal, rendered_markdown
from tests.ui_store import demo_workspace, open_page

PARAM = ("![x](http://evil.example/p.png) [login](https://evil.example) <img src=x> **b** :smile: :red[r] "
         "www.evil.example")
DANGER = {"image", "link_open", "html_inline", "html_block", "bare_link", "shortcode", "math", "directive"}
MARKDOWN = ("markdown", "caption", "error", "info", "warning", "success", "title", "header", "subheader")


pytestmark = pytest.mark.usefixtures("one_thread")


def _markdown(at) -> list[str]:
    """Every Markdown source the page drew, labels of links, metrics and buttons included."""
    sources = [str(e.value) for kind in MARKDOWN for e in at.get(kind)]
    return sources + [e.label for kind in ("metric", "button") for e in at.get(kind)] + \
        [e.proto.label for e in at.get("page_link")]


def _nothing_dangerous(at) -> None:
    for source in _markdown(at):
        assert not rendered_markdown(source)[1] & DANGER, source


@pytest.mark.parametrize("page, params", [
    ("views/browser.py", {"dict": PARAM}),
    ("views/feature.py", {"dict": PARAM, "feature": 1}),
    ("views/steering.py", {"dict": PARAM, "feature": 1}),
    ("views/compare.py", {"a": PARAM}),
    ("views/compare.py", {"a": "topk-demo", "b": PARAM}),
    ("views/feature.py", {"dict": "topk-demo", "feature": PARAM}),
])
def test_a_hostile_query_parameter_is_one_error_in_plain_text(ui_ws, page, params):
    """/browser?dict=![x](http://host/p.png) rendered a remote image in the error line."""
    at = open_page(page, **params)
    assert not at.exception and len(at.error) == 1
    assert_literal(at.error[0].value, PARAM)
    _nothing_dangerous(at)


def test_hostile_labels_show_as_text_in_the_inspector(ui_ws):
    con = duckdb.connect(str(ui_ws / "sparsescope.duckdb"))
    for feature in range(384):  # every feature of topk-demo: whichever fires on the token shows its label
        set_label(con, "topk-demo", feature, HOSTILE[feature % len(HOSTILE)].replace("\n", " "))
    con.close()
    at = open_page("views/inspector.py", text="**b** [x](http://evil.example) :smile:")
    assert not at.exception and not at.error
    links = [e.proto.label for e in at.get("page_link") if e.proto.query_string.startswith("dict=topk-demo")]
    assert links
    for label in links:
        text, kinds = rendered_markdown(label)
        assert not kinds and any(h.replace("\n", " ") in text for h in HOSTILE), label
    _nothing_dangerous(at)
    # the token pills are model output: a "*" or "[" token is a character, not Markdown
    pills = at.pills[0]
    for label in pills.options:
        assert not rendered_markdown(label)[1], label


def test_a_hostile_stored_prompt_shows_as_text_on_the_steering_page(ui_ws):
    from store.steering import add_run

    prompt = "\n".join(HOSTILE)
    con = duckdb.connect(str(ui_ws / "sparsescope.duckdb"))
    add_run(con, "tiny-random", "topk-demo", {"prompt": prompt, "seed": 0, "interventions": [
        {"mode": "add", "dictionary": "topk-demo", "feature": 1, "strength": 2.0}]}, ["a"], ["b"],
        {"kl_mean": 0.1, "perplexity_steered": 2.0})
    con.close()
    at = open_page("views/steering.py", dict="topk-demo", feature=1)
    assert not at.exception and not at.error
    (shown,) = [c.value for c in at.caption if "seed 0" in c.value]
    assert_literal(shown, HOSTILE[0], HOSTILE[1][:20])
    _nothing_dangerous(at)


def test_a_hostile_workspace_folder_name_shows_as_text(tmp_path, monkeypatch):
    root = demo_workspace(tmp_path / "[ws](https:evil.example) *x* <b>")
    monkeypatch.setenv("SPARSESCOPE_WORKSPACE", str(root))
    at = open_page()
    assert not at.exception and not at.error
    assert_literal(next(c.value for c in at.caption if c.value.startswith("workspace")), str(root))
    _nothing_dangerous(at)


EMOJI = "Caf\u00e9 \U0001f600 na\u00efve \U0001f44d\U0001f3fd \u2014 \u4e2d\u6587"


def test_emoji_prompts_are_inspected_and_steered(ui_ws):
    at = open_page("views/inspector.py", text=EMOJI)
    assert not at.exception and not at.error
    assert at.html[0].value.count('class="tok"') == len(EMOJI.encode()) + 1  # byte tokens after BOS
    at = open_page("views/steering.py", dict="topk-demo", feature=3)
    next(t for t in at.toggle if t.label.startswith("chat template")).set_value(False)
    next(s for s in at.slider if s.label.startswith("new tokens")).set_value(3)
    at.text_area[0].set_value(EMOJI)
    next(b for b in at.button if b.label.startswith("Steer")).click().run()
    assert not at.exception and not at.error
    con = duckdb.connect(str(ui_ws / "sparsescope.duckdb"), read_only=True)
    (config,) = con.execute("SELECT config FROM steering_runs").fetchone()
    con.close()
    assert json.loads(config)["prompt"] == EMOJI
