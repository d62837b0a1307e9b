"""Attribution page, "ablate this node and rerun": on a graph the real `sparsescope attribute` made (tiny-random, the
demo store's topk-demo, mean ablation over the demo corpus) the metric before and after is shown beside the
attribution's prediction; the graph's dictionaries gone from the store, or a model the workspace cannot load, is one
st.error with the graph still drawn."""
import re

import pytest

from store import session
from store.graphs import get_graph, list_graphs
from tests.attribution_graphs import Column, graph_document, save_document
from tests.helpers import WORD_JOINER, run_cli
from tests.ui_store import CORPUS, HOOK, MODEL, open_page, texts

PAGE = "views/attribution.py"
WORDS = re.compile(r"metric (\S+) -> (\S+) \(change (\S+); attribution predicted (\S+)\)")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def made(ui_ws, monkeypatch, capsys):
    """(graph id, document) of a graph made by `sparsescope attribute` on the demo workspace."""
    code, out, err = run_cli(monkeypatch, capsys, "attribute", "--model", MODEL, "--prompt", "The cat sat on the",
                             "--target", " ", "--contrast", "e", "--dictionaries", "topk-demo", "--ablation", "mean",
                             "--corpus", CORPUS, "--max-nodes", "8", "-w", str(ui_ws))
    assert code in (0, None), err
    with session(ui_ws / "sparsescope.duckdb", read_only=True) as con:
        (row,) = list_graphs(con)
        return row.id, get_graph(con, row.id)[1]


def _shown(at) -> str:
    return texts(at).replace("\\", "").replace(WORD_JOINER, "")


def _ablate(at, graph_id: int, node_id: str):
    return at.button(key=f"ablate-{graph_id}-{node_id}").click().run()


def test_ablating_a_node_shows_the_change_beside_the_prediction(made):
    graph_id, doc = made
    assert doc["metadata"]["corpus"] == CORPUS and doc["metadata"]["ablation"] == "mean"
    top = max((n for n in doc["nodes"] if n["feature_type"] == "feature"), key=lambda n: abs(n["attribution"]))
    error = next(n for n in doc["nodes"] if n["feature_type"] == "error")
    at = open_page(PAGE, graph=graph_id, node=top["node_id"])
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert not WORDS.search(_shown(at))  # nothing runs before the button is pressed
    at = _ablate(at, graph_id, top["node_id"])
    assert not at.exception and not at.error, [e.value for e in at.error]
    before, after, change, predicted = WORDS.search(_shown(at)).groups()
    assert float(before) == pytest.approx(doc["metadata"]["metric"], abs=0.005)  # the splice leaves the model as is
    assert float(change) == pytest.approx(float(after) - float(before), rel=1e-6)
    assert float(predicted) == pytest.approx(-top["attribution"], rel=0.06)  # shown to 2 significant digits at least
    assert float(after) != float(before)  # the graph's strongest node moves the metric
    assert "is not the graph's" not in _shown(at)

    at = open_page(PAGE, graph=graph_id, node=error["node_id"])  # an error node has the button too
    at = _ablate(at, graph_id, error["node_id"])
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert float(WORDS.search(_shown(at)).group(4)) == pytest.approx(-error["attribution"], rel=0.06)


def test_the_graphs_dictionaries_gone_is_one_error(made, ui_ws):
    from store.dictionaries import delete_dictionary

    graph_id, doc = made
    node = next(n for n in doc["nodes"] if n["feature_type"] == "feature")
    with session(ui_ws / "sparsescope.duckdb") as con:
        delete_dictionary(con, "topk-demo")
    at = _ablate(open_page(PAGE, graph=graph_id, node=node["node_id"]), graph_id, node["node_id"])
    assert not at.exception
    assert len(at.error) == 1 and "topk-demo are no longer in the store" in at.error[0].value.replace("\\", "")
    assert at.get("plotly_chart") and not WORDS.search(_shown(at))


def test_a_model_the_workspace_cannot_load_is_one_error(ui_ws):
    doc = graph_document("The c", ["<bos>", "T", "h", "e", " ", "c"], " a", None,
                         [Column("topk-demo", HOOK, 0, [(1, 2, 1.5, 0.8)], error=0.05)])
    with session(ui_ws / "sparsescope.duckdb") as con:
        graph_id = save_document(con, doc, model="no-such-model", ablation="zero")
    at = _ablate(open_page(PAGE, graph=graph_id, node="topk-demo:1@2"), graph_id, "topk-demo:1@2")
    assert not at.exception
    assert len(at.error) == 1 and "unknown model 'no-such-model'" in at.error[0].value.replace("\\", "")
    assert at.get("plotly_chart") and not WORDS.search(_shown(at))


@pytest.mark.parametrize("before, after, attribution, words", [
    (4.13, 3.20, 0.88, "metric 4.13 -> 3.20 (change -0.93; attribution predicted -0.88)"),
    (0.55012, 0.54536, 0.00476, "metric 0.5501 -> 0.5454 (change -0.0048; attribution predicted -0.0048)"),
    (1.0, 1.0, 0.0, "metric 1.00 -> 1.00 (change +0.00; attribution predicted +0.00)"),
])
def test_ablation_words(before, after, attribution, words):
    from app.ui.widgets.attribution import ablation_words

    assert ablation_words(before, after, attribution) == words


def test_the_mean_baselines_corpus_is_read_from_the_metadata_or_its_words():
    from app.ui.data.attribution import mean_corpus
    from store.errors import InputError

    assert mean_corpus({"corpus": "web", "corpus_contexts": 8, "baseline": "mean over 1 tokens of corpus x"}) == \
        ("web", 8)
    assert mean_corpus({"baseline": "mean over 2,032 tokens of corpus my corpus"}) == ("my corpus", 16)
    for metadata in ({"baseline": "mean over 10 tokens of corpus (given)"}, {}):
        with pytest.raises(InputError, match="does not say which corpus"):
            mean_corpus(metadata)
