"""The Attribution page in headless Chromium: a store built by the real CLI on the tiny model (the demo-sized test
store plus a residual-stream dictionary at layer 1 that `sparsescope train` and `sparsescope analyze` add) with a
saved graph whose nodes name real features of both layers; hover a node, click it, follow "open feature page".
Screenshots go to tests/artifacts/."""
from __future__ import annotations

import pytest

from tests.attribution_graphs import Column, graph_document, save_document
from tests.helpers import cli_workspace, screenshot, serve_ui, settled
from tests.ui_store import CORPUS, CTX, HOOK, MODEL, N_CONTEXTS

pytestmark = pytest.mark.browser

LAYER1 = "resid1-demo"
LAYER1_HOOK = "blocks.1.hook_resid_post"
PROMPT = "The cat sat on"
HOVERED = 1
"""The topk-demo feature the test hovers and clicks: the test store labels it "first letters"."""
CLI = (
    ("train", "--arch", "topk", "--model", MODEL, "--hook", LAYER1_HOOK, "--corpus", CORPUS, "--tokens", "2048",
     "--batch", "256", "--d-sae", "32", "--k", "4", "--name", LAYER1, "--device", "cpu"),
    ("analyze", LAYER1, "--corpus", CORPUS, "--tokens", str(N_CONTEXTS * CTX), "--examples", "4", "--quantiles", "2",
     "--device", "cpu"),
)


def _busiest(con, dictionary: str, n: int) -> list[int]:
    return [r[0] for r in con.execute(
        "SELECT feature FROM feature_examples WHERE dictionary = ? AND kind = 'top' GROUP BY feature "
        "ORDER BY count(*) DESC, feature LIMIT ?", [dictionary, n]).fetchall()]


def _save_graph(ws) -> dict:
    """A graph over PROMPT's real tokens naming HOVERED and busy features of topk-demo (layer 0) and LAYER1."""
    from sae.models import load_model
    from store import session

    tokens = load_model(MODEL, device="cpu").to_str_tokens(PROMPT)
    last = len(tokens) - 1
    with session(ws / "sparsescope.duckdb") as con:
        low = [f for f in _busiest(con, "topk-demo", 3) if f != HOVERED][:2]
        high = _busiest(con, LAYER1, 2)
        doc = graph_document(PROMPT, tokens, " m", " d", [
            Column("topk-demo", HOOK, 0, [(HOVERED, 2, 1.8, 0.9), (low[0], last - 2, 0.9, -0.35),
                                          (low[1], last, 1.1, 0.5)], error=0.15),
            Column(LAYER1, LAYER1_HOOK, 1, [(high[0], last, 2.2, 1.1), (high[1], last - 1, 0.6, -0.2)],
                   error=-0.1)], metric=1.6)
        save_document(con, doc, metric=1.6)
    return doc


@pytest.fixture(scope="module")
def served(tmp_path_factory, browser):
    ws = cli_workspace(tmp_path_factory, "attribution", CLI)
    doc = _save_graph(ws)
    with serve_ui(ws) as url:
        yield url, doc


@pytest.fixture(scope="module")
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(60_000)
    yield page
    page.close()


def _node_center(page, doc: dict, node_id: str) -> tuple[float, float]:
    """Where the node's marker is drawn: plotly draws trace k as the scatter layer's kth trace group (the links
    first, one trace each, then the features, then the error nodes, then the logit)."""
    features = [n["node_id"] for n in doc["nodes"] if n["feature_type"] == "feature"]
    trace = page.locator(".js-plotly-plot .scatterlayer g.trace").nth(len(doc["links"]))
    box = trace.locator("path.point").nth(features.index(node_id)).bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def test_hover_a_node_then_click_through_to_its_feature_page(served, page):
    url, doc = served
    node_id = f"topk-demo:{HOVERED}@2"
    page.goto(f"{url}/attribution")
    page.locator(".js-plotly-plot .scatterlayer path.point").first.wait_for()
    settled(page)
    page.get_by_text("the graph alone keeps 72%").wait_for()
    screenshot(page, "attribution-graph")

    x, y = _node_center(page, doc, node_id)
    page.mouse.move(x, y)
    hover = page.locator(".js-plotly-plot .hoverlayer .hovertext")
    hover.first.wait_for()
    label = hover.first.text_content()
    assert f"topk-demo #{HOVERED}" in label and "first letters" in label and "activation 1.8" in label, label
    screenshot(page, "attribution-hover")

    page.mouse.click(x, y)
    feature_link = page.get_by_test_id("stPageLink").filter(has_text="open feature page")
    feature_link.wait_for()
    settled(page)
    assert f"node={node_id.replace(':', '%3A').replace('@', '%40')}" in page.url
    assert page.get_by_test_id("stPageLink").filter(has_text="steer with this feature").count() == 1
    screenshot(page, "attribution-node")

    feature_link.click()
    page.locator("h2", has_text=f"feature #{HOVERED}").filter(has_text="first letters").wait_for()
    settled(page)
    assert "/feature?" in page.url and "dict=topk-demo" in page.url and f"feature={HOVERED}" in page.url
    screenshot(page, "attribution-feature")
