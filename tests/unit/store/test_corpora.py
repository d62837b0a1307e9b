"""Corpus fingerprints, what is built on a corpus, and replacing a corpus all or nothing."""
import duckdb
import pyarrow as pa
import pytest

from store import connect
from store.corpora import Corpus, corpus_dependants, corpus_fingerprint, fingerprint_contexts, get_corpus, save_corpus
from store.errors import InputError
from store.migrations import available
from store.models import CacheRow, upsert_cache


def _corpus(name="c", ctx=4, n=3, offset=0):
    ids = [[0] + [offset + 10 * i + j for j in range(1, ctx)] for i in range(n)]
    return Corpus(name, "tiny-random", "test", ctx, True, n, n * ctx), ids, [f"text {i}" for i in range(n)]


def _save(con, corpus, ids, texts, **kw):
    return save_corpus(con, corpus, ids, texts, **kw)


def _fp(ctx, ids):
    return fingerprint_contexts(ctx, [pa.array(ids, pa.list_(pa.int32()))])


def test_the_fingerprint_is_of_the_token_ids_and_stored(con):
    corpus, ids, texts = _corpus()
    _save(con, corpus, ids, texts)
    stored = get_corpus(con, "c").fingerprint
    assert stored == corpus_fingerprint(con, "c") == _fp(4, ids) and len(stored) == 64
    assert _fp(4, ids[:1] + [ids[1][:-1] + [999]] + ids[2:]) != stored  # one token differs
    assert _fp(2, [row[i:i + 2] for row in ids for i in (0, 2)]) != stored  # same ids, other contexts
    # pieces of any size hash the same (a large corpus is hashed as it is read)
    assert fingerprint_contexts(4, [pa.array(ids[:1], pa.list_(pa.int32())),
                                    pa.array(ids[1:], pa.list_(pa.int32())).slice(0)]) == stored
    assert corpus_fingerprint(con, "missing") is None


def test_a_corpus_stored_before_fingerprints_gets_one_computed(con):
    corpus, ids, texts = _corpus(n=7)
    _save(con, corpus, ids, texts)
    expected = get_corpus(con, "c").fingerprint
    con.execute("UPDATE corpora SET fingerprint = NULL")
    assert get_corpus(con, "c").fingerprint is None
    assert corpus_fingerprint(con, "c") == expected


def _dependants(con, corpus="c"):
    from store.features import write_feature_stats

    upsert_cache(con, CacheRow("m__h__c", "tiny-random", "h", corpus, 8, 12, "/nowhere/m__h__c", True, "x"))
    features = pa.table({"feature": pa.array([0], pa.int32()), "count": pa.array([1], pa.int64()),
                         "density": [0.5], "mean_act": [1.0], "max_act": [1.0]})
    write_feature_stats(con, "d", corpus, {"features": features}, n_tokens=12)
    con.execute("INSERT INTO head_runs (model, corpus, n_layers, n_heads, n_kv_heads, n_contexts, n_tokens) "
                "VALUES ('tiny-random', ?, 2, 4, 4, 3, 12)", [corpus])
    con.execute("INSERT INTO head_stats VALUES ('tiny-random', ?, 0, 0, 0, 'self', 0.5, 12)", [corpus])


def test_dependants_are_listed(con):
    corpus, ids, texts = _corpus()
    _save(con, corpus, ids, texts)
    assert not corpus_dependants(con, "c")
    _dependants(con)
    found = corpus_dependants(con, "c")
    assert found.caches == (("m__h__c", "/nowhere/m__h__c"),) and found.analyses == ("d",)
    assert found.head_scans == ("tiny-random",)
    assert found.describe() == "1 activation cache (m__h__c), 1 feature analysis (d), 1 head scan (tiny-random)"
    assert not corpus_dependants(con, "other")


def test_replacing_refuses_while_dependants_exist_and_force_deletes_them(con):
    corpus, ids, texts = _corpus()
    _save(con, corpus, ids, texts)
    _dependants(con)
    new, new_ids, new_texts = _corpus(offset=5)
    with pytest.raises(InputError, match=r"1 activation cache \(m__h__c\).*--force"):
        _save(con, new, new_ids, new_texts, replace=True)
    assert corpus_fingerprint(con, "c") == _fp(4, ids)
    deleted = _save(con, new, new_ids, new_texts, replace=True, force=True)
    assert deleted.analyses == ("d",)
    assert corpus_fingerprint(con, "c") == _fp(4, new_ids)
    for table in ("activation_caches", "analyses", "features", "head_runs", "head_stats"):
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table


def test_a_failure_while_replacing_rolls_everything_back(con, monkeypatch):
    import store.heads

    corpus, ids, texts = _corpus()
    _save(con, corpus, ids, texts)
    _dependants(con)

    def broken(con, corpus):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store.heads, "delete_corpus_scans", broken)
    new, new_ids, new_texts = _corpus(offset=5)
    with pytest.raises(RuntimeError):
        _save(con, new, new_ids, new_texts, replace=True, force=True)
    assert corpus_fingerprint(con, "c") == _fp(4, ids)
    for table in ("activation_caches", "analyses", "features", "head_runs"):
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 1, table


def test_an_old_store_gains_the_fingerprint_columns(tmp_path):
    path = tmp_path / "old.duckdb"
    raw = duckdb.connect(str(path))
    raw.execute("CREATE TABLE _migrations (id INTEGER PRIMARY KEY, name VARCHAR, applied TIMESTAMP)")
    for number, name, sql in available():
        if name == "corpus_fingerprints":
            break
        raw.execute(sql)
        raw.execute("INSERT INTO _migrations (id, name) VALUES (?, ?)", [number, name])
    raw.execute("INSERT INTO corpora (name, model, source, ctx, bos, n_contexts, n_tokens) "
                "VALUES ('c', 'tiny-random', 'test', 2, true, 2, 4)")
    raw.execute("INSERT INTO contexts VALUES ('c', 0, [0, 5], 'a'), ('c', 1, [0, 6], 'b')")
    raw.close()
    con = connect(path)
    assert get_corpus(con, "c").fingerprint is None
    assert corpus_fingerprint(con, "c") == _fp(2, [[0, 5], [0, 6]])
    for table in ("activation_caches", "analyses", "head_runs"):
        columns = [r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                             "WHERE table_name = ?", [table]).fetchall()]
        assert "corpus_fingerprint" in columns, table
    con.close()
