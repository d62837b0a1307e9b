"""Writing the results of a feature-statistics pass, and the token strings searches need.

A dictionary's results are replaced as a whole in one transaction: readers see either the previous
analysis or the new one, never a mix, and a failure midway leaves the previous results in place.
"""
from __future__ import annotations

import hashlib
import json
from typing import Mapping, Sequence

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from store.db import transaction
from store.errors import InputError

RESULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "features": ("feature", "count", "density", "mean_act", "max_act"),
    "feature_histograms": ("feature", "bin", "bin_lo", "bin_hi", "count"),
    "feature_examples": ("feature", "kind", "band", "rank", "corpus", "context_id", "position",
                         "activation", "window_start", "token_acts"),
    "feature_logits": ("feature", "sign", "rank", "token_id", "token", "value"),
    "feature_neighbors": ("feature", "kind", "rank", "other", "score"),
    "mp_steps": ("feature", "step", "count"),
    "mp_parents": ("feature", "rank", "parent", "count"),
    "feature_heads": ("feature", "head", "weight"),
}
"""Result tables and the columns an incoming Arrow table must have (features may add decoder columns)."""

WRITE_ROWS = 1_000_000
"""Rows sorted and inserted at a time. A table goes in as consecutive feature ranges, each sorted, so DuckDB's sort
holds about this many rows at once: a 65,536-feature analysis writes ~7M example rows, which sorted whole took
1.5 GB more memory than the rows themselves."""

_DELETE = {table: f"DELETE FROM {table} WHERE dictionary = ?" for table in RESULT_COLUMNS}
# Table names come from the fixed RESULT_COLUMNS keys, never from input; values are bound with `?`.
# Rows go in sorted by feature: DuckDB's per-row-group min/max then narrows a feature lookup to one group.
_RANGE = "(SELECT * FROM _incoming WHERE feature >= ? AND feature < ?)"
_INSERT = {table: f"INSERT INTO {table} BY NAME SELECT ?::VARCHAR AS dictionary, * FROM {_RANGE} "
                  "ORDER BY feature" for table in RESULT_COLUMNS}
# an example's token id is copied from its context at write time so token searches need no list indexing
_INSERT["feature_examples"] = (
    "INSERT INTO feature_examples BY NAME "
    "SELECT ?::VARCHAR AS dictionary, i.*, c.token_ids[i.position + 1] AS token_id "
    f"FROM {_RANGE} i LEFT JOIN contexts c ON c.corpus = i.corpus AND c.context_id = i.context_id "
    "ORDER BY i.feature")


def _check(tables: Mapping[str, pa.Table]) -> None:
    unknown = set(tables) - set(RESULT_COLUMNS)
    if unknown:
        raise ValueError(f"unknown result tables {sorted(unknown)}; expected some of {sorted(RESULT_COLUMNS)}")
    if "features" not in tables:
        raise ValueError("a feature analysis needs at least the `features` table")
    for name, table in tables.items():
        missing = set(RESULT_COLUMNS[name]) - set(table.column_names)
        if missing:
            raise ValueError(f"table {name} lacks columns {sorted(missing)}")
        if "dictionary" in table.column_names:
            raise ValueError(f"table {name} must not carry a dictionary column (the store adds it)")


def _model_of(con: duckdb.DuckDBPyConnection, corpus: str) -> str:
    row = con.execute("SELECT model FROM corpora WHERE name = ?", [corpus]).fetchone()
    if row is None:
        raise InputError(f"unknown corpus {corpus!r}; pass model= or add the corpus first")
    return row[0]


def write_feature_stats(con: duckdb.DuckDBPyConnection, dictionary: str, corpus: str,
                        tables: Mapping[str, pa.Table], *, n_tokens: int, model: str | None = None,
                        config: Mapping | None = None, corpus_fingerprint: str | None = None) -> None:
    """Replace every result of `dictionary` with `tables` and mark it analysed, all in one transaction.

    tables: name -> Arrow table without a dictionary column (see RESULT_COLUMNS); result tables not given
    end up empty for this dictionary. model defaults to the corpus' model. Labels are left untouched.
    corpus_fingerprint: the fingerprint of the contexts the pass read (store.corpora); InputError, and nothing
    written, when the corpus no longer holds them.
    """
    from store.corpora import require_fingerprint

    _check(tables)
    model = model or _model_of(con, corpus)
    config = json.dumps(dict(config or {}) | {"results_sha256": results_digest(tables)})
    with transaction(con, "analyze"):
        require_fingerprint(con, corpus, corpus_fingerprint)
        same = con.execute("SELECT count(*) FROM analyses WHERE dictionary = ? AND model = ? AND corpus = ? AND "
                           "n_tokens = ? AND config::VARCHAR = ? AND corpus_fingerprint IS NOT DISTINCT FROM ?",
                           [dictionary, model, corpus, n_tokens, config, corpus_fingerprint])
        if same.fetchone()[0]:  # a rerun with identical results: rewriting them would only grow the file
            con.execute("UPDATE analyses SET finished = current_timestamp WHERE dictionary = ?", [dictionary])
            return
        for table in RESULT_COLUMNS:
            con.execute(_DELETE[table], [dictionary])
        for name, table in tables.items():
            _insert(con, name, table, dictionary)
        con.execute("INSERT OR REPLACE INTO analyses (dictionary, model, corpus, n_tokens, config, finished, "
                    "corpus_fingerprint) VALUES (?, ?, ?, ?, ?, current_timestamp, ?)",
                    [dictionary, model, corpus, n_tokens, config, corpus_fingerprint])
    reclaim(con)


def results_digest(tables: Mapping[str, pa.Table]) -> str:
    """SHA-256 of the result tables (Arrow IPC bytes, tables by name): equal results, equal digests."""
    digest = hashlib.sha256()
    for name in sorted(tables):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, tables[name].schema) as writer:
            writer.write_table(tables[name])
        digest.update(name.encode() + b"\0" + sink.getvalue().to_pybytes())
    return digest.hexdigest()


def reclaim(con: duckdb.DuckDBPyConnection) -> None:
    """CHECKPOINT now, so the blocks of replaced rows are free for the next write to reuse (DuckDB never shrinks
    its file but truncates free blocks at its end; without a checkpoint every replacement takes new blocks).
    Skipped while another transaction of this database is open: the next checkpoint frees them."""
    try:
        con.execute("CHECKPOINT")
    except duckdb.TransactionException:
        pass


def _insert(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table, dictionary: str) -> None:
    con.register("_incoming", table)
    try:
        for lo, hi in _feature_ranges(table):
            con.execute(_INSERT[name], [dictionary, lo, hi])
    finally:
        con.unregister("_incoming")


def _feature_ranges(table: pa.Table) -> list[tuple[int, int]]:
    """[lo, hi) feature ranges that split the table into parts of about WRITE_ROWS rows (equal id spans)."""
    if table.num_rows == 0:
        return []
    bounds = pc.min_max(table["feature"])
    lo, hi = bounds["min"].as_py(), bounds["max"].as_py() + 1
    parts = min(-(-table.num_rows // WRITE_ROWS), hi - lo)
    edges = [lo + (hi - lo) * i // parts for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:]))


def delete_feature_stats(con: duckdb.DuckDBPyConnection, dictionary: str) -> None:
    """Forget a dictionary's analysis (labels stay, in case it is analysed again)."""
    with transaction(con):
        delete_results(con, dictionary)


def delete_results(con: duckdb.DuckDBPyConnection, dictionary: str) -> None:
    """delete_feature_stats inside the caller's transaction."""
    for table in RESULT_COLUMNS:
        con.execute(_DELETE[table], [dictionary])
    con.execute("DELETE FROM analyses WHERE dictionary = ?", [dictionary])


def write_vocab(con: duckdb.DuckDBPyConnection, model: str, tokens: Sequence[str]) -> None:
    """Store the text of every token id of `model` (tokens[i] is id i), replacing what was there."""
    table = pa.table({"token_id": pa.array(range(len(tokens)), pa.int32()),
                      "token": pa.array(list(tokens), pa.string())})
    with transaction(con):
        con.execute("DELETE FROM vocab WHERE model = ?", [model])
        con.register("_incoming", table)
        try:
            con.execute("INSERT INTO vocab SELECT ?::VARCHAR, token_id, token FROM _incoming", [model])
        finally:
            con.unregister("_incoming")


def has_vocab(con: duckdb.DuckDBPyConnection, model: str) -> bool:
    return con.execute("SELECT count(*) > 0 FROM vocab WHERE model = ?", [model]).fetchone()[0]


def feature_quality(con: duckdb.DuckDBPyConnection, dictionary: str) -> dict[str, float | int | None]:
    """How browsable a dictionary's analysed features are: `features` (rows), `never_fired` (share with no firing
    in the analysis), `one_token` (share of the features with at least two top examples whose top examples all
    fire on one and the same token: often a token detector rather than a concept) and `with_top` (how many
    features that share is of). Shares are None when there is nothing to take them of."""
    n, never = con.execute("SELECT count(*), count(*) FILTER (WHERE count = 0) FROM features WHERE dictionary = ?",
                           [dictionary]).fetchone()
    with_top, one = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE tokens = 1) FROM ("
        "  SELECT feature, count(DISTINCT token_id) AS tokens, count(*) AS n FROM feature_examples"
        "  WHERE dictionary = ? AND kind = 'top' AND token_id IS NOT NULL GROUP BY feature) WHERE n >= 2",
        [dictionary]).fetchone()
    return {"features": n, "never_fired": never / n if n else None, "with_top": with_top,
            "one_token": one / with_top if with_top else None}
