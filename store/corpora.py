"""Corpora and their tokenised contexts."""
from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from store.db import transaction
from store.errors import InputError


@dataclass(frozen=True)
class Corpus:
    name: str
    model: str
    source: str
    ctx: int
    bos: bool
    n_contexts: int
    n_tokens: int


_COLUMNS = "name, model, source, ctx, bos, n_contexts, n_tokens"


def get_corpus(con: duckdb.DuckDBPyConnection, name: str) -> Corpus | None:
    row = con.execute(f"SELECT {_COLUMNS} FROM corpora WHERE name = ?", [name]).fetchone()
    return Corpus(*row) if row else None


def require_corpus(con: duckdb.DuckDBPyConnection, name: str) -> Corpus:
    corpus = get_corpus(con, name)
    if corpus is None:
        known = ", ".join(c.name for c in list_corpora(con)) or "none yet"
        raise InputError(f"unknown corpus {name!r} (known: {known}); add it with `sparsescope corpus add`")
    return corpus


def list_corpora(con: duckdb.DuckDBPyConnection) -> list[Corpus]:
    rows = con.execute(f"SELECT {_COLUMNS} FROM corpora ORDER BY name").fetchall()
    return [Corpus(*row) for row in rows]


def save_corpus(con: duckdb.DuckDBPyConnection, corpus: Corpus,
                token_ids: list[list[int]], texts: list[str], replace: bool = False) -> None:
    """Store a corpus and its contexts in one transaction (all or nothing)."""
    if len(token_ids) != len(texts) or len(token_ids) != corpus.n_contexts:
        raise ValueError("token_ids, texts and corpus.n_contexts disagree")
    table = pa.table({
        "corpus": pa.array([corpus.name] * len(texts), pa.string()),
        "context_id": pa.array(range(len(texts)), pa.int32()),
        "token_ids": pa.array(token_ids, pa.list_(pa.int32())),
        "text": pa.array(texts, pa.string()),
    })
    with transaction(con):
        if get_corpus(con, corpus.name) is not None:
            if not replace:
                raise InputError(f"corpus {corpus.name!r} already exists (use --replace to rebuild it)")
            con.execute("DELETE FROM contexts WHERE corpus = ?", [corpus.name])
            con.execute("DELETE FROM corpora WHERE name = ?", [corpus.name])
        con.execute(f"INSERT INTO corpora ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [corpus.name, corpus.model, corpus.source, corpus.ctx, corpus.bos,
                     corpus.n_contexts, corpus.n_tokens])
        con.register("_new_contexts", table)
        try:
            con.execute("INSERT INTO contexts SELECT corpus, context_id, token_ids, text FROM _new_contexts")
        finally:
            con.unregister("_new_contexts")


def context_tokens(con: duckdb.DuckDBPyConnection, corpus: str, start: int, stop: int) -> list[list[int]]:
    """Token ids of contexts start..stop-1, in order."""
    rows = con.execute(
        "SELECT token_ids FROM contexts WHERE corpus = ? AND context_id >= ? AND context_id < ? "
        "ORDER BY context_id", [corpus, start, stop]).fetchall()
    return [row[0] for row in rows]


def context_text(con: duckdb.DuckDBPyConnection, corpus: str, context_id: int) -> str | None:
    row = con.execute("SELECT text FROM contexts WHERE corpus = ? AND context_id = ?",
                      [corpus, context_id]).fetchone()
    return row[0] if row else None
