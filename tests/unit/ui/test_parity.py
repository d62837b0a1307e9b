"""The feature page's SAEDashboard block: logit effects over the whole vocabulary, neuron alignment, whole contexts
of the top examples (computed on request, checked against the stored analysis and brute force)."""
import json

import numpy as np
import pytest
import torch

from app.ui.data import parity as data
from sae.dictionaries import load_dictionary
from store import connect
from store.corpora import context_tokens
from store.queries import feature_card
from tests.ui_store import HOOK, MODEL, N_TOP, open_page, texts
from tests.unit.ui.conftest import ATTN_DICT, ATTN_HOOK

PAGE = "views/feature.py"
TOPK = "topk-demo"


def _read(root, fn, *args):
    con = connect(root / "sparsescope.duckdb", read_only=True)
    try:
        return fn(con, *args)
    finally:
        con.close()


def _path(con, name):
    return con.execute("SELECT path FROM dictionaries WHERE name = ?", [name]).fetchone()[0]


def _busiest(con, name):
    """A feature with all N_TOP top examples (ties: the lowest id)."""
    return con.execute("SELECT feature FROM feature_examples WHERE dictionary = ? AND kind = 'top' GROUP BY feature "
                       "ORDER BY count(*) DESC, feature LIMIT 1", [name]).fetchone()[0]


def _histograms(at):
    """The vocabulary histogram's step lines (x: bin edges, y: counts with the last repeated)."""
    return [t for chart in at.get("plotly_chart") for t in json.loads(chart.proto.spec)["data"]
            if t.get("name") == "tokens"]


def _array(value):
    if isinstance(value, dict):  # numpy's bytes as plotly's JSON holds them
        import base64

        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).astype(float)
    return np.array(value, dtype=float)


def test_the_block_shows_the_vocabulary_histogram_and_the_alignment_table(ui_ws):
    feature = _read(ui_ws, _busiest, TOPK)
    at = open_page(PAGE, dict=TOPK, feature=feature)
    assert not at.exception and not at.error and not _histograms(at)  # on request only: the model stays unloaded
    at.toggle(key=f"parity-vocab-{TOPK}-{feature}").set_value(True).run()
    assert not at.exception and at.query_params["vocab"] == "1"
    shown = texts(at)
    assert "Logit effects over the whole vocabulary" in shown and "Neuron alignment" in shown
    (steps,) = _histograms(at)
    sae = load_dictionary(_read(ui_ws, _path, TOPK))
    from sae.models import load_model

    assert _array(steps["y"])[:-1].sum() == load_model(MODEL, device="cpu").cfg.d_vocab
    row = sae.W_dec[feature].detach().double().numpy()
    table = at.table[0].value
    assert table["dimension"].tolist() == np.argsort(-np.abs(row))[:10].tolist()
    np.testing.assert_allclose(table["% of L1"], 100 * np.abs(row[table["dimension"]]) / np.abs(row).sum(),
                               atol=1e-3)
    assert "pick a top example" in shown  # the whole context runs the model on request only
    assert not [h for h in at.get("html") if h.value.count('class="tok"') == 48]


def test_the_histogram_marks_the_tokens_analyze_stored(attn_ws):
    """On a dictionary analysed by the real `analyze`, the on-request histogram's extremes are its stored logits."""
    con = connect(attn_ws / "sparsescope.duckdb", read_only=True)
    feature, path = _busiest(con, ATTN_DICT), _path(con, ATTN_DICT)
    stored = con.execute("SELECT sign, token_id FROM feature_logits WHERE dictionary = ? AND feature = ? "
                         "ORDER BY sign, rank", [ATTN_DICT, feature]).fetchall()
    con.close()
    vh = data.vocab_histogram(MODEL, ATTN_DICT, path, ATTN_HOOK, feature)
    assert vh.hist.top_ids.tolist() == [t for s, t in stored if s == 1]
    assert vh.hist.bottom_ids.tolist() == [t for s, t in stored if s == -1]
    assert len(vh.top_tokens) == 10


@pytest.mark.parametrize("root_fixture, name, hook", [("ui_ws", TOPK, HOOK), ("attn_ws", ATTN_DICT, ATTN_HOOK)])
def test_whole_context_activations_equal_the_stored_top_examples(request, root_fixture, name, hook):
    """The forward pass on request reproduces what the analysis stored: the activation at each top example's token
    (to 1e-4) and its whole window."""
    root = request.getfixturevalue(root_fixture)
    con = connect(root / "sparsescope.duckdb", read_only=True)
    feature, path = _busiest(con, name), _path(con, name)
    card = feature_card(con, name, feature)
    contexts = {e.context_id: tuple(context_tokens(con, e.corpus, e.context_id, e.context_id + 1)[0])
                for e in card.top_examples}
    con.close()
    assert len(card.top_examples) >= 2
    for example in card.top_examples:
        texts_, acts = data.context_activations(MODEL, name, path, hook, contexts[example.context_id], feature)
        assert len(texts_) == len(acts) == len(contexts[example.context_id])
        assert float(acts[example.position]) == pytest.approx(example.activation, abs=1e-4)
        window = acts[example.window_start:example.window_start + len(example.token_acts)]
        np.testing.assert_allclose(window, example.token_acts, atol=1e-4)


def test_a_top_example_in_the_url_shows_its_whole_context(ui_ws):
    feature = _read(ui_ws, _busiest, TOPK)
    card = _read(ui_ws, feature_card, TOPK, feature)
    example = card.top_examples[2]
    at = open_page(PAGE, dict=TOPK, feature=feature, context=2)
    assert not at.exception and not at.error
    shown = texts(at)
    assert f"activation {example.activation:.4g} at the outlined token {example.position}" in shown
    (full,) = [h.value for h in at.get("html") if h.value.count('class="tok"') == 48]  # the corpus' contexts: 48
    assert full.count("outline:2px") == 1
    # picking another example puts it in the URL; clearing the pick takes it out
    at.button_group(key=f"context-of-{TOPK}-{feature}-2").set_value(0).run()
    assert not at.exception and at.query_params["context"] == "0"
    assert f"at the outlined token {card.top_examples[0].position}" in texts(at)


@pytest.mark.parametrize("value, needle", [(str(N_TOP), f"context example {N_TOP} is out of range"),
                                           ("99", "context example 99 is out of range"),
                                           ("x", "context must be a whole number")])
def test_a_bad_context_example_in_the_url_is_one_error(ui_ws, value, needle):
    feature = _read(ui_ws, _busiest, TOPK)
    at = open_page(PAGE, dict=TOPK, feature=feature, context=value)
    assert not at.exception
    assert len(at.error) == 1 and needle in at.error[0].value
    assert "Label" in texts(at) and "Neuron alignment" in texts(at)  # the rest of the page is still there


def test_the_correlation_column_matches_a_direct_computation(ui_ws):
    feature = _read(ui_ws, _busiest, TOPK)
    at = open_page(PAGE, dict=TOPK, feature=feature)
    at.toggle(key=f"parity-corr-{TOPK}-{feature}").set_value(True).run()
    assert not at.exception and not at.error
    table = at.table[0].value
    # brute force: the hook activations and the stored windows' activations over every top example's window
    from sae.models import load_model

    con = connect(ui_ws / "sparsescope.duckdb", read_only=True)
    card = feature_card(con, TOPK, feature)
    rows, acts = [], []
    lm = load_model(MODEL, device="cpu")
    for e in card.top_examples:
        ids = torch.tensor([context_tokens(con, e.corpus, e.context_id, e.context_id + 1)[0]])
        with torch.no_grad():
            _, cache = lm.run_with_cache(ids, names_filter=HOOK)
        rows.append(cache[HOOK][0, e.window_start:e.window_start + len(e.token_acts)].numpy())
        acts += e.token_acts
    con.close()
    x, f = np.concatenate(rows).astype(np.float64), np.array(acts, dtype=np.float64)
    expected = [np.corrcoef(f, x[:, d])[0, 1] for d in table["dimension"]]
    np.testing.assert_allclose(table["correlation"], expected, atol=1e-3)
