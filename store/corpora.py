"""Corpora and their tokenised contexts, their fingerprints, and what is built on them."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import duckdb
import numpy as np
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
    fingerprint: str | None = None
    """SHA-256 of its token ids (fingerprint_contexts); None for a corpus stored before fingerprints existed
    (corpus_fingerprint computes it)."""


_COLUMNS = "name, model, source, ctx, bos, n_contexts, n_tokens, fingerprint"


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


def fingerprint_contexts(ctx: int, token_ids: Iterable[pa.ListArray]) -> str:
    """SHA-256 of a corpus' contexts: ctx, then every token id as little-endian int32, contexts in order.

    token_ids: the contexts' token-id lists in pieces (Arrow list arrays), so a large corpus is hashed as it
    is read. Two corpora share a fingerprint exactly when they hold the same token windows.
    """
    digest = hashlib.sha256(f"sparsescope contexts ctx={ctx}\n".encode())
    for piece in token_ids:
        digest.update(np.asarray(piece.flatten().to_numpy(zero_copy_only=False), dtype="<i4").tobytes())
    return digest.hexdigest()


def corpus_fingerprint(con: duckdb.DuckDBPyConnection, name: str) -> str | None:
    """The fingerprint of corpus `name` as stored now (None when there is no such corpus). A corpus stored
    before fingerprints existed gets its fingerprint computed from its contexts (not written back)."""
    rows = con.execute("SELECT fingerprint, ctx FROM corpora WHERE name = ?", [name]).fetchall()
    if not rows or rows[0][0] is not None:
        return rows[0][0] if rows else None
    reader = con.sql("SELECT token_ids FROM contexts WHERE corpus = ? ORDER BY context_id",
                     params=[name]).to_arrow_reader(65_536)
    return fingerprint_contexts(rows[0][1], (batch.column(0) for batch in reader))


def require_fingerprint(con: duckdb.DuckDBPyConnection, corpus: str, fingerprint: str | None) -> None:
    """InputError unless corpus `corpus` still holds the contexts of `fingerprint` (None: not checked). Writers
    of results call it inside their transaction, so results of replaced text never land."""
    if fingerprint is not None and corpus_fingerprint(con, corpus) != fingerprint:
        raise InputError(f"corpus {corpus!r} was replaced while this ran; nothing was stored: run it again")


@dataclass(frozen=True)
class Dependants:
    """What is built on a corpus' contexts and would be reused, or shown with other text, once it changes."""

    caches: tuple[tuple[str, str], ...] = ()
    """(name, folder) of each activation cache."""
    analyses: tuple[str, ...] = ()
    """Dictionaries whose feature analysis reads the corpus."""
    head_scans: tuple[str, ...] = ()
    """Models with a head scan of the corpus."""

    def __bool__(self) -> bool:
        return bool(self.caches or self.analyses or self.head_scans)

    def describe(self) -> str:
        """One line, e.g. "1 activation cache (m__h__c), 2 feature analyses (a, b)"."""
        parts = []
        for what, plural, names in (("activation cache", "activation caches", [n for n, _ in self.caches]),
                                    ("feature analysis", "feature analyses", self.analyses),
                                    ("head scan", "head scans", self.head_scans)):
            if names:
                shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                parts.append(f"{len(names)} {what if len(names) == 1 else plural} ({shown})")
        return ", ".join(parts) or "nothing"


def corpus_dependants(con: duckdb.DuckDBPyConnection, name: str) -> Dependants:
    caches = con.execute("SELECT name, path FROM activation_caches WHERE corpus = ? ORDER BY name",
                         [name]).fetchall()
    analyses = con.execute("SELECT dictionary FROM analyses WHERE corpus = ? UNION "
                           "SELECT dictionary FROM feature_examples WHERE corpus = ? ORDER BY 1",
                           [name, name]).fetchall()
    scans = con.execute("SELECT model FROM head_runs WHERE corpus = ? UNION SELECT model FROM head_stats "
                        "WHERE corpus = ? UNION SELECT model FROM head_examples WHERE corpus = ? UNION "
                        "SELECT model FROM head_means WHERE corpus = ? ORDER BY 1", [name] * 4).fetchall()
    return Dependants(tuple((n, p) for n, p in caches), tuple(r[0] for r in analyses), tuple(r[0] for r in scans))


def _delete_dependants(con: duckdb.DuckDBPyConnection, name: str, found: Dependants) -> None:
    """Delete the store rows of `found` (inside the caller's transaction); cache folders are the caller's."""
    from store.features import delete_results
    from store.heads import delete_corpus_scans

    con.execute("DELETE FROM activation_caches WHERE corpus = ?", [name])
    for dictionary in found.analyses:
        delete_results(con, dictionary)
    delete_corpus_scans(con, name)


def save_corpus(con: duckdb.DuckDBPyConnection, corpus: Corpus, token_ids: list[list[int]], texts: list[str],
                replace: bool = False, force: bool = False) -> Dependants:
    """Store a corpus and its contexts in one transaction (all or nothing), with its fingerprint.

    Replacing a corpus refuses while results are built on its contexts (corpus_dependants), unless `force`:
    then their rows are deleted in the same transaction. Returns what was deleted; removing the deleted caches'
    folders (after this commit) is the caller's job.
    """
    if len(token_ids) != len(texts) or len(token_ids) != corpus.n_contexts:
        raise ValueError("token_ids, texts and corpus.n_contexts disagree")
    table = pa.table({
        "corpus": pa.array([corpus.name] * len(texts), pa.string()),
        "context_id": pa.array(range(len(texts)), pa.int32()),
        "token_ids": pa.array(token_ids, pa.list_(pa.int32())),
        "text": pa.array(texts, pa.string()),
    })
    fingerprint = fingerprint_contexts(corpus.ctx, table.column("token_ids").chunks)
    found = Dependants()
    with transaction(con):
        if get_corpus(con, corpus.name) is not None:
            if not replace:
                raise InputError(f"corpus {corpus.name!r} already exists (use --replace to rebuild it)")
            found = corpus_dependants(con, corpus.name)
            if found and not force:
                raise dependants_error(corpus.name, found)
            _delete_dependants(con, corpus.name, found)
            con.execute("DELETE FROM contexts WHERE corpus = ?", [corpus.name])
            con.execute("DELETE FROM corpora WHERE name = ?", [corpus.name])
        con.execute(f"INSERT INTO corpora ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [corpus.name, corpus.model, corpus.source, corpus.ctx, corpus.bos,
                     corpus.n_contexts, corpus.n_tokens, fingerprint])
        con.register("_new_contexts", table)
        try:
            con.execute("INSERT INTO contexts SELECT corpus, context_id, token_ids, text FROM _new_contexts")
        finally:
            con.unregister("_new_contexts")
    return found


def dependants_error(name: str, found: Dependants) -> InputError:
    return InputError(f"corpus {name!r} has results built on its current text: {found.describe()}; "
                      "add --force to delete them and rebuild it")


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
