"""Activation caches in a workspace: validate the request, run the model, register the cache."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb

from analysis.corpora import ensure_corpus
from sae.activations import Manifest, cache_name, read_manifest, write_caches
from sae.models import check_hook, hook_output_dim, model_info
from store.corpora import context_tokens, corpus_fingerprint, get_corpus
from store.db import borrow, transaction
from store.errors import InputError
from store.models import CacheRow, ModelRow, get_cache, upsert_cache, upsert_model
from store.workspace import Workspace


@dataclass(frozen=True)
class CacheResult:
    manifest: Manifest
    path: Path
    reused: bool
    note: str = ""
    """One line when a cache of other text was found and rebuilt."""


def stale_reason(con: duckdb.DuckDBPyConnection, name: str, manifest: Manifest) -> str | None:
    """Why the activation cache `name` does not hold activations of the contexts its corpus holds now, or None
    when it does (or its corpus is not in this store, so there is nothing to compare)."""
    if get_corpus(con, manifest.corpus) is None:
        return None
    if manifest.corpus_fingerprint is None:
        return (f"activation cache {name} predates corpus fingerprints, so it may hold other text than "
                f"corpus {manifest.corpus!r}")
    if manifest.corpus_fingerprint != corpus_fingerprint(con, manifest.corpus):
        return f"activation cache {name} holds activations of earlier text of corpus {manifest.corpus!r}"
    return None


def require_current(con: duckdb.DuckDBPyConnection | None, folder: Path, manifest: Manifest) -> None:
    """InputError when a cache chosen by name was made on other contexts than its corpus holds now."""
    reason = stale_reason(con, folder.name, manifest) if con is not None else None
    if reason:
        raise InputError(f"{reason}; rebuild it: sparsescope activations --model {manifest.model} --hook "
                         f"{manifest.hook} --corpus {manifest.corpus} --tokens {manifest.n_tokens}")


def register_model(con: duckdb.DuckDBPyConnection, model) -> None:
    info = model_info(model)
    upsert_model(con, ModelRow(info.name, info.n_layers, info.d_model, info.n_params, info.d_vocab))


def build_cache(ws: Workspace, con: duckdb.DuckDBPyConnection | None, model, hook: str, corpus_name: str,
                tokens: int, batch: int = 32, progress: bool = True) -> CacheResult:
    """Cache activations at `hook` for the first `tokens` tokens of a corpus (reuse or resume if present).

    con None: the workspace's store is opened only for short reads (checks, each batch's token ids) and the
    final registration, never while the model runs, so other jobs can write meanwhile.
    """
    return build_caches(ws, con, model, [hook], corpus_name, tokens, batch, progress)[0]


def build_caches(ws: Workspace, con: duckdb.DuckDBPyConnection | None, model, hooks: list[str], corpus_name: str,
                 tokens: int, batch: int = 32, progress: bool = True) -> list[CacheResult]:
    """One cache per hook (as build_cache), written from one forward pass per batch that runs as far as the
    deepest hook still missing; finished caches are reused, killed ones resumed. Results in the order of hooks."""
    if tokens <= 0:
        raise InputError(f"--tokens must be positive (got {tokens})")
    if batch <= 0:
        raise InputError(f"--batch must be positive (got {batch})")
    if not hooks or len(set(hooks)) != len(hooks):
        raise InputError(f"give each hook once (got {', '.join(hooks) or 'none'})")
    for hook in hooks:
        check_hook(model, hook)
    name = model.cfg.model_name
    store = con if con is not None else ws.db_path
    results: dict[str, CacheResult] = {}
    todo: list[tuple[str, Path, Manifest]] = []
    notes: dict[str, str] = {}
    with borrow(store) as con:
        corpus = ensure_corpus(con, corpus_name, name, tokens)
        n_contexts = min(-(-tokens // corpus.ctx), corpus.n_contexts)
        if corpus.ctx > model.cfg.n_ctx:
            raise InputError(f"corpus contexts ({corpus.ctx} tokens) exceed the model's context ({model.cfg.n_ctx})")
        for hook in hooks:
            folder = ws.named("activations", cache_name(name, hook, corpus.name))
            old = read_manifest(folder)
            note = stale_reason(con, folder.name, old) if old is not None else None
            if note:  # never resumed nor reused: its shards would mix other text into the cache
                shutil.rmtree(folder)
                note, old = f"{note}: rebuilding it", None
            if old is not None and old.complete and old.contexts_done >= n_contexts:
                if get_cache(con, folder.name) is None:  # written by a run killed before its commit
                    register_model(con, model)
                    _register(con, folder, old)
                results[hook] = CacheResult(old, folder, reused=True)
                continue
            want = Manifest(model=name, hook=hook, corpus=corpus.name, d=hook_output_dim(model, hook),
                            ctx=corpus.ctx, n_contexts=n_contexts,
                            corpus_fingerprint=corpus_fingerprint(con, corpus.name))
            _check_disk(folder, want, old)
            todo.append((hook, folder, want))
            notes[hook] = note or ""
        if todo:
            register_model(con, model)
    if todo:
        written = write_caches(model, todo, _token_reader(store, corpus.name), batch=batch, progress=progress)
        with borrow(store) as con:
            for (hook, folder, _), manifest in zip(todo, written):
                _register(con, folder, manifest)
                results[hook] = CacheResult(manifest, folder, reused=False, note=notes[hook])
    return [results[h] for h in hooks]


def _register(con: duckdb.DuckDBPyConnection, folder: Path, m: Manifest) -> None:
    with transaction(con, "activations"):
        upsert_cache(con, CacheRow(folder.name, m.model, m.hook, m.corpus, m.d, m.n_tokens, str(folder),
                                   m.complete, m.corpus_fingerprint))


def _token_reader(store, corpus: str):
    """Token ids of contexts lo..hi-1, each read in its own short read-only session when `store` is a path."""
    read_only = not isinstance(store, duckdb.DuckDBPyConnection)

    def read(lo: int, hi: int) -> list[list[int]]:
        with borrow(store, read_only=read_only) as con:
            return context_tokens(con, corpus, lo, hi)
    return read


def _check_disk(folder: Path, want: Manifest, old: Manifest | None) -> None:
    """InputError before the model runs when the cache cannot fit on the disk (float32 rows of d values)."""
    from sae.device import human_bytes

    need = (want.n_contexts - (old.contexts_done if old is not None else 0)) * want.ctx * want.d * 4
    where = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(where).free
    if need > free:
        raise InputError(f"caching {want.n_contexts:,} contexts x {want.ctx} tokens x d={want.d} needs "
                         f"{human_bytes(need)} of disk, but {where} has {human_bytes(free)} free; "
                         "ask for fewer --tokens")
