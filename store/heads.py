"""Attention-head results: scores per (model, corpus, layer, head), top-attending contexts, mean head outputs,
and per-feature head attribution of attention-output dictionaries.

A scan of (model, corpus) is replaced as a whole in one transaction, so readers see the previous scan or the
new one, never a mix; a rerun replaces it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from store.db import transaction
from store.paths import check_output_file, staging_file

STATS_COLUMNS = ("layer", "head", "kv_group", "score", "value", "n_tokens")
EXAMPLE_COLUMNS = ("layer", "head", "rank", "context_id", "score", "peak_weight", "peak_src")
MEAN_COLUMNS = ("layer", "head", "mean_z")
_SCAN_TABLES = {"head_stats": STATS_COLUMNS, "head_examples": EXAMPLE_COLUMNS, "head_means": MEAN_COLUMNS}


@dataclass(frozen=True)
class HeadRun:
    model: str
    corpus: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    n_contexts: int
    n_tokens: int
    config: dict = field(default_factory=dict)
    corpus_fingerprint: str | None = None
    """Fingerprint of the contexts scanned (store.corpora); None for a scan made before fingerprints."""


@dataclass(frozen=True)
class HeadExample:
    """A top-attending context of a head; peak_* are indexed by destination - 1 (destinations 1..ctx-1)."""

    rank: int
    context_id: int
    score: float
    peak_weight: list[float]
    peak_src: list[int]


_RUN_COLUMNS = "model, corpus, n_layers, n_heads, n_kv_heads, n_contexts, n_tokens, config, corpus_fingerprint"


def _check_columns(name: str, table: pa.Table, columns: tuple[str, ...]) -> None:
    if set(table.column_names) != set(columns):
        raise ValueError(f"table {name} must have exactly the columns {columns}, got {table.column_names}")


def save_head_scan(con: duckdb.DuckDBPyConnection, run: HeadRun, tables: Mapping[str, pa.Table]) -> None:
    """Replace the scan of (run.model, run.corpus): tables head_stats, head_examples, head_means (Arrow, without
    model/corpus columns; see *_COLUMNS), all in one transaction. InputError, and nothing written, when the
    corpus no longer holds the contexts of run.corpus_fingerprint."""
    from store.corpora import require_fingerprint

    if set(tables) != set(_SCAN_TABLES):
        raise ValueError(f"a head scan needs exactly the tables {sorted(_SCAN_TABLES)}")
    for name, table in tables.items():
        _check_columns(name, table, _SCAN_TABLES[name])
    with transaction(con, "heads"):
        require_fingerprint(con, run.corpus, run.corpus_fingerprint)
        for name, table in tables.items():
            con.execute(f"DELETE FROM {name} WHERE model = ? AND corpus = ?", [run.model, run.corpus])
            con.register("_incoming_heads", table)
            try:
                con.execute(f"INSERT INTO {name} BY NAME SELECT ?::VARCHAR AS model, ?::VARCHAR AS corpus, * "
                            "FROM _incoming_heads", [run.model, run.corpus])
            finally:
                con.unregister("_incoming_heads")
        con.execute(f"INSERT OR REPLACE INTO head_runs ({_RUN_COLUMNS}, finished) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, current_timestamp)",
                    [run.model, run.corpus, run.n_layers, run.n_heads, run.n_kv_heads, run.n_contexts,
                     run.n_tokens, json.dumps(run.config), run.corpus_fingerprint])


def delete_corpus_scans(con: duckdb.DuckDBPyConnection, corpus: str) -> None:
    """Delete every model's scan of `corpus` (inside the caller's transaction)."""
    for table in (*_SCAN_TABLES, "head_runs"):
        con.execute(f"DELETE FROM {table} WHERE corpus = ?", [corpus])


def _run(row) -> HeadRun:
    return HeadRun(*row[:-2], config=json.loads(row[-2]) if row[-2] else {}, corpus_fingerprint=row[-1])


def get_head_run(con: duckdb.DuckDBPyConnection, model: str, corpus: str) -> HeadRun | None:
    row = con.execute(f"SELECT {_RUN_COLUMNS} FROM head_runs WHERE model = ? AND corpus = ?",
                      [model, corpus]).fetchone()
    return _run(row) if row else None


def list_head_runs(con: duckdb.DuckDBPyConnection, model: str | None = None) -> list[HeadRun]:
    rows = con.execute(f"SELECT {_RUN_COLUMNS} FROM head_runs WHERE ?::VARCHAR IS NULL OR model = ? "
                       "ORDER BY finished DESC", [model, model]).fetchall()
    return [_run(row) for row in rows]


def score_names(con: duckdb.DuckDBPyConnection, model: str, corpus: str) -> list[str]:
    rows = con.execute("SELECT DISTINCT score FROM head_stats WHERE model = ? AND corpus = ? ORDER BY score",
                       [model, corpus]).fetchall()
    return [row[0] for row in rows]


def score_grid(con: duckdb.DuckDBPyConnection, model: str, corpus: str, score: str) -> list[tuple[int, int, float]]:
    """(layer, head, value) of one score for every head, ordered by layer then head."""
    return con.execute("SELECT layer, head, value FROM head_stats WHERE model = ? AND corpus = ? AND score = ? "
                       "ORDER BY layer, head", [model, corpus, score]).fetchall()


def head_scores(con: duckdb.DuckDBPyConnection, model: str, corpus: str, layer: int,
                head: int) -> dict[str, float]:
    rows = con.execute("SELECT score, value FROM head_stats WHERE model = ? AND corpus = ? AND layer = ? "
                       "AND head = ? ORDER BY score", [model, corpus, layer, head]).fetchall()
    return dict(rows)


def top_heads(con: duckdb.DuckDBPyConnection, model: str, corpus: str, score: str, n: int = 5,
              descending: bool = True) -> list[tuple[int, int, float]]:
    """The n heads with the highest (or lowest) value of `score`: (layer, head, value)."""
    order = "DESC" if descending else "ASC"
    return con.execute(f"SELECT layer, head, value FROM head_stats WHERE model = ? AND corpus = ? AND score = ? "
                       f"ORDER BY value {order}, layer, head LIMIT ?", [model, corpus, score, n]).fetchall()


def head_examples(con: duckdb.DuckDBPyConnection, model: str, corpus: str, layer: int,
                  head: int) -> list[HeadExample]:
    rows = con.execute("SELECT rank, context_id, score, peak_weight, peak_src FROM head_examples "
                       "WHERE model = ? AND corpus = ? AND layer = ? AND head = ? ORDER BY rank",
                       [model, corpus, layer, head]).fetchall()
    return [HeadExample(*row) for row in rows]


def head_means(con: duckdb.DuckDBPyConnection, model: str, corpus: str) -> dict[tuple[int, int], list[float]]:
    """(layer, head) -> mean hook_z vector over the scanned corpus tokens."""
    rows = con.execute("SELECT layer, head, mean_z FROM head_means WHERE model = ? AND corpus = ?",
                       [model, corpus]).fetchall()
    return {(layer, head): mean for layer, head, mean in rows}


def head_stats_table(con: duckdb.DuckDBPyConnection, model: str | None = None,
                     corpus: str | None = None) -> pa.Table:
    """Every stored head score (long format), optionally for one model and/or corpus."""
    return con.sql("SELECT model, corpus, layer, head, kv_group, score, value, n_tokens FROM head_stats "
                   "WHERE (?::VARCHAR IS NULL OR model = ?) AND (?::VARCHAR IS NULL OR corpus = ?) "
                   "ORDER BY model, corpus, score, layer, head",
                   params=[model, model, corpus, corpus]).to_arrow_table()


def export_head_stats(con: duckdb.DuckDBPyConnection, path: str | Path, model: str | None = None,
                      corpus: str | None = None, force: bool = False) -> int:
    """Write head scores to a Parquet file (long format: one row per model, corpus, layer, head, score).

    The file must be new unless `force`; it is written under a temporary name and renamed into place.
    """
    target = check_output_file(path, force, make_parent=True)
    table = head_stats_table(con, model, corpus)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_file(target.parent, target.name)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return table.num_rows


def save_feature_heads(con: duckdb.DuckDBPyConnection, dictionary: str, table: pa.Table) -> None:
    """Replace the head attribution of `dictionary` (columns feature, head, weight)."""
    _check_columns("feature_heads", table, ("feature", "head", "weight"))
    with transaction(con):
        con.execute("DELETE FROM feature_heads WHERE dictionary = ?", [dictionary])
        con.register("_incoming_heads", table)
        try:
            con.execute("INSERT INTO feature_heads BY NAME SELECT ?::VARCHAR AS dictionary, * FROM _incoming_heads",
                        [dictionary])
        finally:
            con.unregister("_incoming_heads")


def feature_heads(con: duckdb.DuckDBPyConnection, dictionary: str, feature: int) -> list[float]:
    """Head attribution weights of one feature, indexed by head (empty if never stored)."""
    rows = con.execute("SELECT weight FROM feature_heads WHERE dictionary = ? AND feature = ? ORDER BY head",
                       [dictionary, feature]).fetchall()
    return [row[0] for row in rows]
