"""Language models the workspace has used, and activation caches made from them."""
from __future__ import annotations

from dataclasses import dataclass

import duckdb


@dataclass(frozen=True)
class ModelRow:
    name: str
    n_layers: int
    d_model: int
    n_params: int | None
    d_vocab: int | None


@dataclass(frozen=True)
class CacheRow:
    name: str
    model: str
    hook: str
    corpus: str
    d: int
    n_tokens: int
    path: str
    complete: bool
    corpus_fingerprint: str | None = None
    """Fingerprint of the corpus' contexts it was made from (store.corpora)."""


def upsert_model(con: duckdb.DuckDBPyConnection, row: ModelRow) -> None:
    con.execute("INSERT OR REPLACE INTO models (name, n_layers, d_model, n_params, d_vocab) "
                "VALUES (?, ?, ?, ?, ?)", [row.name, row.n_layers, row.d_model, row.n_params, row.d_vocab])


def list_models(con: duckdb.DuckDBPyConnection) -> list[ModelRow]:
    rows = con.execute("SELECT name, n_layers, d_model, n_params, d_vocab FROM models ORDER BY name").fetchall()
    return [ModelRow(*row) for row in rows]


_CACHE_COLUMNS = "name, model, hook, corpus, d, n_tokens, path, complete, corpus_fingerprint"


def upsert_cache(con: duckdb.DuckDBPyConnection, row: CacheRow) -> None:
    con.execute(f"INSERT OR REPLACE INTO activation_caches ({_CACHE_COLUMNS}, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, current_timestamp)",
                [row.name, row.model, row.hook, row.corpus, row.d, row.n_tokens, row.path, row.complete,
                 row.corpus_fingerprint])


def get_cache(con: duckdb.DuckDBPyConnection, name: str) -> CacheRow | None:
    row = con.execute(f"SELECT {_CACHE_COLUMNS} FROM activation_caches WHERE name = ?", [name]).fetchone()
    return CacheRow(*row) if row else None


def list_caches(con: duckdb.DuckDBPyConnection) -> list[CacheRow]:
    rows = con.execute(f"SELECT {_CACHE_COLUMNS} FROM activation_caches ORDER BY name").fetchall()
    return [CacheRow(*row) for row in rows]
