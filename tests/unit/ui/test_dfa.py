"""The feature page's attention-output block: head attribution and DFA by head and source position."""
import base64
import json
import re

import numpy as np
import pytest
import torch

from store import connect
from store.queries import feature_card
from tests.ui_store import MODEL, open_page, texts
from tests.unit.ui.conftest import ATTN_DICT

PAGE = "views/feature.py"


def _card(root, feature):
    con = connect(root / "sparsescope.duckdb", read_only=True)
    try:
        return feature_card(con, ATTN_DICT, feature)
    finally:
        con.close()


def _busy_feature(root) -> int:
    """A feature with the most top examples (ties: the lowest id)."""
    con = connect(root / "sparsescope.duckdb", read_only=True)
    try:
        return con.execute("SELECT feature FROM feature_examples WHERE dictionary = ? AND kind = 'top' "
                           "GROUP BY feature ORDER BY count(*) DESC, feature LIMIT 1", [ATTN_DICT]).fetchone()[0]
    finally:
        con.close()


def _figures(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def _array(value) -> np.ndarray:
    """A plotly figure array as JSON holds it: a list, or numpy's bytes ({dtype, bdata, shape})."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return flat.reshape([int(n) for n in str(value.get("shape", len(flat))).split(",")]).astype(float)
    return np.array(value, dtype=float)


def _heatmaps(at) -> list[dict]:
    return [t for fig in _figures(at) for t in fig["data"] if t["type"] == "heatmap"]


def test_a_hook_z_feature_shows_its_stored_head_shares_and_offers_dfa(attn_ws):
    feature = _busy_feature(attn_ws)
    at = open_page(PAGE, dict=ATTN_DICT, feature=feature)
    assert not at.exception and not at.error
    shown = texts(at)
    assert "Head attribution" in shown and "Direct feature attribution" in shown
    bars = [t for fig in _figures(at) for t in fig["data"] if t["type"] == "bar"]
    assert len(bars) == 1 and len(bars[0]["y"]) == 4
    con = connect(attn_ws / "sparsescope.duckdb", read_only=True)
    stored = [w for (w,) in con.execute("SELECT weight FROM feature_heads WHERE dictionary = ? AND feature = ? "
                                        "ORDER BY head", [ATTN_DICT, feature]).fetchall()]
    con.close()
    np.testing.assert_allclose(_array(bars[0]["y"]), stored, rtol=1e-6)
    assert not _heatmaps(at), "DFA runs on request only"
    at.button(key=f"dfa-go-{ATTN_DICT}-{feature}").click().run()
    assert not at.exception and not at.error
    assert at.query_params["dfa"] == "0" and len(_heatmaps(at)) == 1


def test_the_dfa_heatmap_is_heads_by_sources_and_lists_a_source_per_head(attn_ws):
    feature = _busy_feature(attn_ws)
    example = _card(attn_ws, feature).top_examples[1]
    at = open_page(PAGE, dict=ATTN_DICT, feature=feature, dfa=1)
    assert not at.exception and not at.error
    (heatmap,) = _heatmaps(at)
    z = _array(heatmap["z"])
    assert z.shape == (4, example.position + 1)  # heads x sources up to the example's token
    table = at.dataframe[-1].value
    assert list(table["head"]) == ["H0", "H1", "H2", "H3"]
    source = at.selectbox(key=f"dfa-src-{ATTN_DICT}-{feature}-1").value
    np.testing.assert_allclose(table["DFA"], z[:, source], atol=1e-6)
    # choosing another source token lists that column
    other = 0 if source else 1
    at.selectbox(key=f"dfa-src-{ATTN_DICT}-{feature}-1").set_value(other).run()
    np.testing.assert_allclose(at.dataframe[-1].value["DFA"], z[:, other], atol=1e-6)
    # choosing another example puts it in the URL
    at.selectbox(key=f"dfa-of-{ATTN_DICT}-{feature}-1").set_value(0).run()
    assert not at.exception and at.query_params["dfa"] == "0"


def test_every_example_shown_has_dfa_summing_to_its_pre_activation(attn_ws):
    """The acceptance check, to 1e-4: for every top example the page shows, DFA over heads and sources plus the
    bias terms equals SAELens' own encoder pre-activation at that token, and (TopK, where it fires) the stored
    activation; the page's caption states the same sum."""
    from analysis.heads.dfa import tokens_dfa
    from sae.dictionaries import load_dictionary
    from sae.models import load_model
    from store.corpora import context_tokens

    feature = _busy_feature(attn_ws)
    card = _card(attn_ws, feature)
    assert len(card.top_examples) >= 2
    con = connect(attn_ws / "sparsescope.duckdb", read_only=True)
    path = con.execute("SELECT path FROM dictionaries WHERE name = ?", [ATTN_DICT]).fetchone()[0]
    contexts = {e.context_id: context_tokens(con, e.corpus, e.context_id, e.context_id + 1)[0]
                for e in card.top_examples}
    con.close()
    lm, sae = load_model(MODEL, device="cpu"), load_dictionary(path)
    captured = {}
    sae.hook_sae_acts_pre.add_hook(lambda x, hook: captured.__setitem__("pre", x.detach().clone()))
    for rank, example in enumerate(card.top_examples):
        tokens = torch.tensor([contexts[example.context_id]])
        result = tokens_dfa(lm, sae, tokens[:, :example.position + 1], dest=example.position, features=[feature])
        with torch.no_grad():
            _, cache = lm.run_with_cache(tokens, names_filter="blocks.1.attn.hook_z")
            sae.encode(cache["blocks.1.attn.hook_z"][0, example.position].reshape(1, -1))
        dfa_total = float(result.dfa.sum())
        assert dfa_total + float(result.bias[0]) == pytest.approx(float(captured["pre"][0, feature]), abs=1e-4)
        assert dfa_total + float(result.bias[0]) == pytest.approx(example.activation, abs=1e-4)
        at = open_page(PAGE, dict=ATTN_DICT, feature=feature, dfa=rank)
        assert not at.exception and not at.error
        said = re.search(r"pre-activation ([+-][\d.]+)", texts(at))
        assert said and float(said.group(1)) == pytest.approx(example.activation, abs=1e-4)


def test_other_dictionaries_show_neither_chart_nor_heatmap(attn_ws):
    at = open_page(PAGE, dict="topk-demo", feature=3, dfa=0)
    assert not at.exception and not at.error
    shown = texts(at)
    assert "Head attribution" not in shown and "Direct feature attribution" not in shown
    assert not _heatmaps(at) and not [t for fig in _figures(at) for t in fig["data"] if t["type"] == "bar"]


@pytest.mark.parametrize("value, needle", [("99", "DFA example 99 is out of range"),
                                           ("x", "dfa must be a whole number")])
def test_a_bad_dfa_example_in_the_url_is_one_error(attn_ws, value, needle):
    feature = _busy_feature(attn_ws)
    at = open_page(PAGE, dict=ATTN_DICT, feature=feature, dfa=value)
    assert not at.exception
    assert len(at.error) == 1 and needle in at.error[0].value
    assert not _heatmaps(at) and "Label" in texts(at)  # the rest of the page is still there
