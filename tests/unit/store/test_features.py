"""Feature results in the store: round trip, atomic replacement, labels, searches, hostile input."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import store.features as features_mod
from store import InputError, connect
from store.features import write_feature_stats, write_vocab
from store.queries import (
    Summary,
    count_features,
    feature_card,
    feature_summaries,
    features_page,
    random_feature,
    search_by_label,
    search_by_logit_token,
    search_by_top_token,
    set_label,
)
from tests.factories import synthetic_feature_tables

VOCAB = ["<bos>", " the", " cat", " sat", " on", " mat", " dog", "The", " ran", "."]
CONTEXTS = [[0, 1, 2, 3, 4, 1, 5, 9], [0, 7, 6, 8, 4, 1, 5, 9], [0, 1, 6, 3, 9, 2, 8, 9]]
N_FEATURES = 4


def make_tables(scale: float = 1.0, n_features: int = N_FEATURES) -> dict[str, pa.Table]:
    """Hand-made results: feature f fires on ' cat' (f even) or ' dog' (f odd), densities f / 10.

    Per feature: a top example and a quantile one (in context 2), one histogram bin, ' sat' promoted and
    ' ran' suppressed, decoder and co-occurrence neighbour f + 1, one MP step and parent."""
    f = np.arange(n_features)
    peak = scale * (f + 1)

    def two_rows(first, second) -> np.ndarray:  # tables with two rows a feature: top / quantile, + / -, ...
        return np.column_stack(np.broadcast_arrays(first, second, f)[:2]).reshape(-1)

    columns = {
        "features": dict(count=f * 10, density=f / 10, mean_act=scale * f, max_act=peak, decoder_norm=1.0,
                         max_decoder_cos=0.5),
        "feature_histograms": dict(bin_lo=0.1, bin_hi=scale * 10, count=f * 10),
        "feature_examples": dict(  # ' cat' at position 2 of context 0, ' dog' at position 2 of context 1
            context_id=two_rows(f % 2, 2), position=two_rows(2, 5),
            activation=two_rows(peak, 0.1 * scale), window_start=two_rows(0, 3),
            token_acts=[acts for p in peak for acts in ([0.0, 0.0, p, 0.5], [0.0, 0.0, 0.1 * scale])]),
        "feature_logits": dict(token_id=two_rows(3, 8), value=two_rows(peak, -1.0)),
        "feature_neighbors": dict(other=np.repeat((f + 1) % n_features, 2), score=0.5),
        "mp_steps": dict(step=1, count=5),
        "mp_parents": dict(parent=0, count=3),
    }
    return synthetic_feature_tables(n_features, n_top=1, n_bands=1, per_band=1, n_bins=1, n_logits=1,
                                    n_neighbors=1, mp_steps=1, dead_every=0, vocab=VOCAB, corpus="c",
                                    n_contexts=len(CONTEXTS), ctx_len=8, window=4, columns=columns)


@pytest.fixture
def con():
    connection = connect(":memory:")
    connection.execute("INSERT INTO corpora (name, model, source, ctx, bos, n_contexts, n_tokens) "
                       "VALUES ('c', 'm', 'test', 8, true, 3, 24)")
    for i, ids in enumerate(CONTEXTS):
        connection.execute("INSERT INTO contexts VALUES ('c', ?, ?, 'text')", [i, ids])
    write_vocab(connection, "m", VOCAB)
    yield connection
    connection.close()


def rows(con, table: str, dictionary: str) -> int:
    return con.execute(f"SELECT count(*) FROM {table} WHERE dictionary = ?", [dictionary]).fetchone()[0]


def test_round_trip_feature_card(con):
    write_feature_stats(con, "d", "c", make_tables(), n_tokens=24)
    card = feature_card(con, "d", 2)
    assert (card.count, card.density, card.max_act, card.corpus, card.n_tokens) == (20, 0.2, 3.0, "c", 24)
    assert card.histogram == [(0.1, 10.0, 20)]
    top = card.top_examples[0]
    assert (top.context_id, top.position, top.activation) == (0, 2, 3.0)
    assert top.tokens == ["<bos>", " the", " cat", " sat"] and top.token_acts == [0.0, 0.0, 3.0, 0.5]
    q = card.quantile_examples[0]
    assert q.band == 0 and q.tokens == [" sat", ".", " cat"]  # context 2, positions 3..5
    assert [(r.id, r.text, r.value) for r in card.promoted] == [(3, " sat", 3.0)]
    assert [(r.id, r.text) for r in card.suppressed] == [(8, " ran")]
    assert [r.id for r in card.decoder_neighbors] == [3] and [r.id for r in card.cooccurring] == [3]
    assert [(r.id, r.value) for r in card.mp_steps] == [(1, 5)]
    assert [(r.id, r.value) for r in card.mp_parents] == [(0, 3)]
    assert card.label == "" and card.notes == ""


def test_unknown_feature_or_dictionary_is_an_input_error(con):
    write_feature_stats(con, "d", "c", make_tables(), n_tokens=24)
    with pytest.raises(InputError):
        feature_card(con, "d", 99)
    with pytest.raises(InputError):
        feature_card(con, "never analysed", 0)


def test_rewrite_replaces_everything_and_leaves_other_dictionaries(con):
    write_feature_stats(con, "d", "c", make_tables(), n_tokens=24)
    write_feature_stats(con, "other", "c", make_tables(), n_tokens=24)
    new = make_tables(scale=2.0, n_features=3)
    del new["mp_steps"], new["mp_parents"]
    write_feature_stats(con, "d", "c", new, n_tokens=48)
    assert rows(con, "features", "d") == 3 and rows(con, "feature_examples", "d") == 6
    assert rows(con, "mp_steps", "d") == 0 and rows(con, "mp_parents", "d") == 0
    card = feature_card(con, "d", 2)
    assert card.max_act == 6.0 and card.n_tokens == 48 and card.mp_steps == []
    assert rows(con, "features", "other") == N_FEATURES and rows(con, "mp_steps", "other") == N_FEATURES


def test_failure_midway_keeps_previous_results(con, monkeypatch):
    write_feature_stats(con, "d", "c", make_tables(), n_tokens=24)
    calls = []
    real_insert = features_mod._insert

    def failing_insert(*args):
        calls.append(args[1])
        if len(calls) == 3:  # after the deletes and two inserts
            raise RuntimeError("disk on fire")
        real_insert(*args)

    monkeypatch.setattr(features_mod, "_insert", failing_insert)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_feature_stats(con, "d", "c", make_tables(scale=5.0), n_tokens=99)
    monkeypatch.undo()
    assert feature_card(con, "d", 2).max_act == 3.0
    assert rows(con, "feature_examples", "d") == 2 * N_FEATURES
    assert con.execute("SELECT n_tokens FROM analyses WHERE dictionary = 'd'").fetchone()[0] == 24


def test_large_tables_go_in_as_sorted_feature_ranges(con, monkeypatch):
    monkeypatch.setattr(features_mod, "WRITE_ROWS", 3)  # 14 example rows: several ranges, one feature may span two
    tables = make_tables(n_features=7)
    tables["feature_examples"] = tables["feature_examples"].take(list(range(13, -1, -1)))  # arrives unsorted
    write_feature_stats(con, "d", "c", tables, n_tokens=24)
    stored = con.execute("SELECT feature, kind FROM feature_examples WHERE dictionary = 'd' ORDER BY rowid").fetchall()
    assert sorted(stored) == sorted((r["feature"], r["kind"]) for r in tables["feature_examples"].to_pylist())
    assert [f for f, _ in stored] == sorted(f for f, _ in stored)  # physically in feature order
    assert feature_card(con, "d", 6).top_examples[0].tokens == [VOCAB[t] for t in CONTEXTS[0][:4]]


def test_bad_table_fails_whole_write(con):
    write_feature_stats(con, "d", "c", make_tables(), n_tokens=24)
    bad = make_tables(scale=5.0)
    bad["feature_neighbors"] = bad["feature_neighbors"].set_column(
        1, "kind", pa.array(["sideways"] * 2 * N_FEATURES))  # violates the CHECK constraint
    with pytest.raises(Exception):
        write_feature_stats(con, "d", "c", bad, n_tokens=99)
    assert feature_card(con, "d", 2).max_act == 3.0
    with pytest.raises(ValueError, match="lacks columns"):
        write_feature_stats(con, "d", "c", {"features": pa.table({"feature": [1]})}, n_tokens=1)
    with pytest.raises(ValueError, match="unknown result tables"):
        write_feature_stats(con, "d", "c", {**make_tables(), "evil": pa.table({"x": [1]})}, n_tokens=1)


def test_labels_survive_reanalysis(con):
    write_feature_stats(con, "d", "c", make_tables(), n_tokens=24)
    set_label(con, "d", 1, "dog detector", "fires on ' dog'")
    write_feature_stats(con, "d", "c", make_tables(scale=2.0), n_tokens=48)
    card = feature_card(con, "d", 1)
    assert (card.label, card.notes) == ("dog detector", "fires on ' dog'")
    with pytest.raises(InputError):
        set_label(con, "d", 99, "nothing here")


def test_searches(con):
    write_feature_stats(con, "d", "c", make_tables(), n_tokens=24)
    assert [h.feature for h in search_by_top_token(con, "d", "cat", 10)] == [2, 0]  # stronger first
    assert [h.feature for h in search_by_top_token(con, "d", " DOG ", 10)] == [3, 1]
    assert search_by_top_token(con, "d", "zebra", 10) == []
    assert [h.feature for h in search_by_logit_token(con, "d", "sat", 2)] == [3, 2]
    dense = features_page(con, "d", order_by="density", descending=True, limit=10, lo=0.15, hi=1.0)
    assert [r.feature for r in dense] == [3, 2]
    assert [r.feature for r in features_page(con, "d", lo=0.0, hi=0.0)] == [0]
    assert (count_features(con, "d"), count_features(con, "d", 0.15, 1.0), count_features(con, "e")) == (4, 2, 0)
    set_label(con, "d", 2, "Cat things")
    assert [r.feature for r in search_by_label(con, "d", "cat", 10)] == [2]
    assert search_by_label(con, "d", "%", 10) == []  # wildcards are taken literally


def test_features_page_orders_and_rejects_unknown_columns(con):
    write_feature_stats(con, "d", "c", make_tables(), n_tokens=24)
    page = features_page(con, "d", order_by="max_act", descending=True, limit=2, offset=1)
    assert [r.feature for r in page] == [2, 1]
    with pytest.raises(InputError, match="cannot sort by"):
        features_page(con, "d", order_by="density; DROP TABLE features")


def test_summaries_and_random_feature(con):
    write_feature_stats(con, "d", "c", make_tables(), n_tokens=24)
    set_label(con, "d", 3, "dog things")
    summaries = feature_summaries(con, "d", [3, 1, 99])
    assert summaries == {1: Summary(0.1, 2.0, "", [" sat"]), 3: Summary(0.3, 4.0, "dog things", [" sat"])}
    assert feature_summaries(con, "d", [1], n_tokens=0)[1].top_tokens == []
    assert {random_feature(con, "d") for _ in range(40)} <= {1, 2, 3}  # feature 0 never fires (count 0)
    assert random_feature(con, "unknown") is None


def test_hostile_text_is_stored_literally(con):
    write_feature_stats(con, "d", "c", make_tables(), n_tokens=24)
    evil = "'; DROP TABLE features; --"
    set_label(con, "d", 0, evil, notes='" OR 1=1 --')
    assert feature_card(con, "d", 0).label == evil
    assert [r.feature for r in search_by_label(con, "d", "DROP TABLE", 10)] == [0]
    assert search_by_top_token(con, "d", evil, 10) == []
    assert rows(con, "features", "d") == N_FEATURES
    write_feature_stats(con, evil, "c", make_tables(), n_tokens=24)  # a hostile dictionary name too
    assert feature_card(con, evil, 1).count == 10


def test_feature_quality_counts_never_fired_and_one_token_features(con):
    from store.features import feature_quality

    # features 0-3: 0 never fires; 1's top examples all fire on token 2; 2's on tokens 2 and 6; 3 has one example
    con.executemany("INSERT INTO features VALUES ('q', ?, ?, 0, 0, 0, NULL, NULL)",
                    [[0, 0], [1, 5], [2, 5], [3, 1]])
    tops = [(1, 0, 2), (1, 1, 2), (1, 2, 2), (2, 0, 2), (2, 1, 6), (3, 0, 6)]
    con.executemany("INSERT INTO feature_examples VALUES ('q', ?, 'top', NULL, ?, 'c', 0, 1, 1.0, 0, [1.0], ?)",
                    [list(t) for t in tops])
    con.execute("INSERT INTO feature_examples VALUES ('q', 2, 'quantile', 0, 0, 'c', 0, 1, 1.0, 0, [1.0], 2)")
    assert feature_quality(con, "q") == {"features": 4, "never_fired": 0.25, "with_top": 2, "one_token": 0.5}
    assert feature_quality(con, "nothing") == {"features": 0, "never_fired": None, "with_top": 0, "one_token": None}
