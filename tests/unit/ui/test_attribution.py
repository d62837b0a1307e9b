"""Attribution page: the stored graphs listed newest first, the chosen one drawn (node traces, error nodes' symbol,
link widths, hover), its faithfulness in words, a click on a node opening its details with links, bad input."""
import json

import pytest

from analysis.graph_view import LINK_WIDTH, NODE_SIZE
from tests.attribution_graphs import Column, graph_document, save_document
from tests.helpers import WORD_JOINER
from tests.ui_store import HOOK, open_page, texts

PAGE = "views/attribution.py"
TOKENS = ["<bos>", "T", "h", "e", " ", "c"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _documents():
    first = graph_document("The c", TOKENS, " a", None, [
        Column("topk-demo", HOOK, 0, [(1, 2, 1.5, 0.8), (5, 4, 0.7, -0.3)], error=0.05),
        Column("mp-demo", HOOK, 0, [(2, 5, 2.0, 1.2)], error=-0.2)])
    second = graph_document("The c", TOKENS, " a", " b", [
        Column("topk-demo", HOOK, 0, [(1, 2, 1.5, 0.9), (7, 2, 0.4, 0.1), (9, 3, 0.2, -0.4)], error=0.3),
        Column("mp-demo", HOOK, 0, [(2, 5, 2.0, 1.6), (3, 1, 0.9, 0.5)], error=-0.1)], top_n=5)
    return first, second


@pytest.fixture
def graphs_ws(ui_ws):
    """The demo workspace with two graphs (the second newer, with a contrast token)."""
    from store import session

    first, second = _documents()
    with session(ui_ws / "sparsescope.duckdb") as con:
        ids = [save_document(con, first), save_document(con, second, recovered=0.5, top_removed=0.25,
                                                        ablation="zero")]
    return ids, (first, second)


def _shown(at) -> str:
    """The page's text as read: without md_escape's backslashes and word joiners."""
    return texts(at).replace("\\", "").replace(WORD_JOINER, "")


def _figure(at) -> dict:
    (chart,) = at.get("plotly_chart")
    return json.loads(chart.proto.spec)


def _traces(figure: dict, name: str) -> list[dict]:
    return [t for t in figure["data"] if t.get("name") == name]


def _click(at, node_id: str):
    """Run the page as if the node `node_id` of its graph was clicked: the plotly chart's selection widget state
    (what the frontend sends on a click), beside the other widgets' states."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    (chart,) = at.get("plotly_chart")
    figure = json.loads(chart.proto.spec)
    (curve, index), = [(c, i) for c, t in enumerate(figure["data"]) for i, d in enumerate(t.get("customdata") or [])
                       if d == node_id]
    trace = figure["data"][curve]
    point = {"curve_number": curve, "point_number": index, "point_index": index, "x": trace["x"][index],
             "y": trace["y"][index], "customdata": node_id}
    states = at._tree.get_widget_states()
    states.widgets.append(WidgetState(id=chart.proto.id, string_value=json.dumps(
        {"selection": {"points": [point], "point_indices": [index], "box": [], "lasso": []}})))
    return at._run(states)


def test_no_graph_says_which_command_makes_one(ui_ws):
    at = open_page(PAGE)
    assert not at.exception and not at.error
    assert "sparsescope attribute --prompt TEXT --target TOKEN" in texts(at)
    assert not at.get("plotly_chart")


def test_two_graphs_are_listed_newest_first_and_the_newest_is_drawn(graphs_ws):
    (first_id, second_id), (_, second) = graphs_ws
    at = open_page(PAGE)
    assert not at.exception and not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert list(table["graph"]) == [f"attribution?graph={second_id}", f"attribution?graph={first_id}"]
    assert list(table["contrast"]) == [" b", ""] and list(table["recovered"]) == [0.5, 0.72]
    assert list(table["nodes"]) == [len(second["nodes"]), 6] and list(table["ablation"]) == ["zero", "mean"]
    assert at.selectbox[0].value == second_id and at.query_params["graph"] == str(second_id)

    figure = _figure(at)
    features, errors, logits = (_traces(figure, name) for name in ("feature", "error node", "logit"))
    assert [len(t["customdata"]) for t in features + errors + logits] == [5, 2, 1]  # every node once
    assert errors[0]["marker"]["symbol"] == "square" and features[0]["marker"]["symbol"] == "circle"
    assert sorted(errors[0]["customdata"]) == ["mp-demo:error@5", "topk-demo:error@5"]
    top = max(abs(n["attribution"]) for n in second["nodes"])  # the logit node's metric
    sizes = dict(zip(features[0]["customdata"], features[0]["marker"]["size"]))
    assert sizes["mp-demo:2@5"] == pytest.approx(NODE_SIZE[0] + (NODE_SIZE[1] - NODE_SIZE[0]) * 1.6 / top)
    assert features[0]["marker"]["color"][features[0]["customdata"].index("topk-demo:9@3")].startswith("rgba(220")

    links = _traces(figure, "link")
    assert len(links) == len(second["links"])
    strongest = max(abs(lk["weight"]) for lk in second["links"])
    widths = sorted(t["line"]["width"] for t in links)
    expected = sorted(LINK_WIDTH[0] + (LINK_WIDTH[1] - LINK_WIDTH[0]) * abs(lk["weight"]) / strongest
                      for lk in second["links"])
    assert widths == pytest.approx(expected) and widths[-1] == pytest.approx(LINK_WIDTH[1])
    # columns upstream first, the logit last; rows are the prompt's tokens
    assert figure["layout"]["xaxis"]["ticktext"] == ["topk-demo (layer 0)", "mp-demo (layer 0)", "logit"]
    assert figure["layout"]["yaxis"]["ticktext"] == [repr(t) for t in TOKENS]
    assert logits[0]["x"][0] == 2 and logits[0]["y"][0] == len(TOKENS) - 1

    hover = dict(zip(features[0]["customdata"], features[0]["hovertext"]))
    assert "first letters" in hover["topk-demo:1@2"] and "activation 1.5" in hover["topk-demo:1@2"]
    assert "pursuit atom" in hover["mp-demo:2@5"] and "attribution 1.6" in hover["mp-demo:2@5"]
    shown = _shown(at)
    assert ("the graph alone keeps 50% of the logit difference ' a' − ' b' (zero ablation); removing its top 5 "
            "nodes loses 25%") in shown
    assert at.get("download_button")


def test_a_graph_in_the_url_is_drawn(graphs_ws):
    (first_id, _), (first, _) = graphs_ws
    at = open_page(PAGE, graph=first_id)
    assert not at.exception and not at.error
    assert at.selectbox[0].value == first_id
    assert sum(len(t["customdata"]) for t in _figure(at)["data"] if t.get("customdata")) == len(first["nodes"])
    assert "keeps 72% of the logit of ' a' (mean ablation); removing its top 10 nodes loses 41%" in \
        _shown(at)


@pytest.mark.parametrize("params, needle", [
    (dict(graph=99), "no graph 99 in the store (stored: "),
    (dict(graph="abc"), "graph must be a whole number"),
    (dict(node="nope:1@1"), "has no node 'nope:1@1'"),
])
def test_bad_input_is_one_error(graphs_ws, params, needle):
    at = open_page(PAGE, **params)
    assert not at.exception
    assert len(at.error) == 1 and needle in at.error[0].value.replace("\\", "").replace(WORD_JOINER, "")
    assert not at.get("plotly_chart")


def test_clicking_a_feature_node_shows_it_with_its_links(graphs_ws):
    (_, second_id), (_, second) = graphs_ws
    at = open_page(PAGE)
    assert "click a node" in texts(at)
    at = _click(at, "topk-demo:1@2")
    assert not at.exception and not at.error
    assert at.query_params["node"] == "topk-demo:1@2"  # the URL opens the same node
    shown = _shown(at)
    assert "topk-demo #1 at 2 ('h')" in shown and "first letters" in shown
    links = {link.proto.label: link.proto for link in at.get("page_link")}
    assert links["open feature page"].page == "feature"
    assert links["open feature page"].query_string == "dict=topk-demo&feature=1"
    assert links["steer with this feature"].page == "steering"
    assert links["steer with this feature"].query_string == "dict=topk-demo&feature=1"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["activation"] == "1.5" and metrics["attribution"] == "0.9"
    outgoing = [t for t in (d.value for d in at.dataframe) if "to" in t.columns]
    assert len(outgoing) == 1 and set(outgoing[0]["to"]) == {n["node_id"] for n in second["nodes"]
                                                            if n.get("dictionary") == "mp-demo"}
    at = open_page(PAGE, **at.query_params)  # the URL of the clicked node: the same details, the node outlined
    assert "topk-demo #1 at 2 ('h')" in _shown(at)
    outlined = _traces(_figure(at), "feature")[0]
    assert outlined["marker"]["line"]["width"][outlined["customdata"].index("topk-demo:1@2")] == 3

    steer = open_page("views/steering.py", dict="topk-demo", feature=1)  # the link's page takes the preset
    assert not steer.exception and not steer.error
    assert steer.selectbox[0].value == "topk-demo" and steer.number_input[0].value == 1


def test_an_error_node_has_no_feature_links(graphs_ws):
    at = open_page(PAGE, node="mp-demo:error@5")
    assert not at.exception and not at.error
    assert "reconstruction error of mp-demo at 5 ('c')" in _shown(at)
    assert not [link for link in at.get("page_link") if link.proto.label == "open feature page"]


def test_a_label_with_markup_is_shown_as_text_in_the_hover(ui_ws, graphs_ws):
    from store import session
    from store.queries import set_label

    with session(ui_ws / "sparsescope.duckdb") as con:
        set_label(con, "topk-demo", 1, "<b>bold</b> & <a href='x'>link</a>", "")
    at = open_page(PAGE)
    feature = _traces(_figure(at), "feature")[0]
    hover = dict(zip(feature["customdata"], feature["hovertext"]))["topk-demo:1@2"]
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;a href=&#x27;x&#x27;&gt;link&lt;/a&gt;" in hover


def test_the_faithfulness_words_name_what_attribution_pruning_alone_kept():
    from types import SimpleNamespace

    from analysis.graph_view import faithfulness_words

    row = SimpleNamespace(target=" a", contrast=None, recovered=0.9, top_removed=0.4, ablation="mean")
    refined = {"faithfulness": {"top_n": 10, "recovered_by_attribution": 0.11, "refine_rounds": 4}}
    assert faithfulness_words(row, refined) == (
        "the graph alone keeps 90% of the logit of ' a' (mean ablation); attribution pruning alone, before 4 "
        "refinement round(s), kept 11%; removing its top 10 nodes loses 40%")
    assert "attribution pruning alone" not in faithfulness_words(row, {"faithfulness": {"top_n": 10}})
