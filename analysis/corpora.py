"""Building corpora: tokenise a source with a model's tokenizer and keep the contexts in the store."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from sae.corpus import tokenize_source
from sae.models import load_tokenizer, prepends_bos
from store.corpora import Corpus, Dependants, corpus_dependants, dependants_error, get_corpus, save_corpus
from store.errors import InputError
from store.workspace import Workspace

DEFAULT_CTX = 128
BUILTIN_TOKENS = 250_000
MAX_TOKENS = 100_000_000
"""Most tokens a corpus may hold: its contexts are tokenised in memory (Python lists, ~40 bytes a token)
before they are stored, and a source without --tokens (a streamed hf: dataset) stops here."""


@dataclass(frozen=True)
class CorpusBuild:
    corpus: Corpus
    deleted: Dependants = field(default_factory=Dependants)
    """Results built on the replaced text, deleted with it (--force)."""
    removed: list[Path] = field(default_factory=list)
    """Folders of the deleted caches, removed from the workspace."""
    kept: list[Path] = field(default_factory=list)
    """Folders of the deleted caches outside the workspace (or not removable), left alone."""


def add_corpus(con: duckdb.DuckDBPyConnection, name: str, source: str, model: str,
               tokens: int | None = None, ctx: int = DEFAULT_CTX, replace: bool = False) -> Corpus:
    """Tokenise `source` into contexts of `ctx` tokens for `model` and store them under `name`."""
    return build_corpus(con, name, source, model, tokens=tokens, ctx=ctx, replace=replace).corpus


def build_corpus(con: duckdb.DuckDBPyConnection, name: str, source: str, model: str, tokens: int | None = None,
                 ctx: int = DEFAULT_CTX, replace: bool = False, force: bool = False,
                 ws: Workspace | None = None, contexts=None) -> CorpusBuild:
    """add_corpus; replacing a corpus that results are built on (activation caches, feature analyses, head
    scans) needs `force`, which deletes them with the old text in one transaction, then removes the deleted
    caches' folders that lie in the activations folder of the workspace `ws`. `contexts`: the source already
    tokenised by `tokenize_corpus` (so a caller can tokenise without holding the store); checked again here."""
    check_corpus_request(con, name, source, tokens, ctx, replace, force)
    if contexts is None:
        contexts = tokenize_corpus(source, model, ctx, tokens)
    corpus = Corpus(name=name, model=model, source=source, ctx=ctx, bos=prepends_bos(model),
                    n_contexts=len(contexts.token_ids), n_tokens=contexts.n_tokens)
    deleted = save_corpus(con, corpus, contexts.token_ids, contexts.texts, replace=replace, force=force)
    removed, kept = _remove_cache_folders(deleted, ws)
    return CorpusBuild(get_corpus(con, name), deleted, removed, kept)


def check_corpus_request(con: duckdb.DuckDBPyConnection, name: str, source: str, tokens: int | None, ctx: int,
                         replace: bool = False, force: bool = False) -> None:
    """InputError when `corpus add` with these options would be refused (checked before and after tokenising)."""
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise InputError(f"corpus name {name!r} must be letters, digits, '-', '_' or '.'")
    if tokens is not None and tokens <= 0:
        raise InputError(f"--tokens must be positive (got {tokens})")
    if tokens is not None and tokens > MAX_TOKENS:
        raise InputError(f"--tokens {tokens:,} is more than a corpus can hold (at most {MAX_TOKENS:,} tokens)")
    if ctx < 2 or ctx > 8192:
        raise InputError(f"--ctx must be between 2 and 8192 (got {ctx})")
    if get_corpus(con, name) is not None:
        if not replace:
            raise InputError(f"corpus {name!r} already exists (use --replace to rebuild it)")
        found = corpus_dependants(con, name)
        if found and not force:
            raise dependants_error(name, found)
    if source not in ("builtin",) and not source.startswith("hf:") and not Path(source).expanduser().exists():
        raise InputError(f"corpus source {source!r} is not 'builtin', 'hf:DATASET' or an existing path")


def tokenize_corpus(source: str, model: str, ctx: int, tokens: int | None):
    """The source's contexts for `model` (no store needed: the slow part of adding a corpus)."""
    return tokenize_source(load_tokenizer(model), source, ctx, prepends_bos(model), tokens or MAX_TOKENS)


def _remove_cache_folders(deleted: Dependants, ws: Workspace | None) -> tuple[list[Path], list[Path]]:
    """Remove the folders of deleted caches that lie in the workspace's activations folder: (removed, kept:
    elsewhere or not removable). Nothing outside that folder is ever removed."""
    removed, kept = [], []
    home = ws.activations_dir.resolve() if ws is not None else None
    for _, path in deleted.caches:
        folder = Path(path).expanduser().resolve()
        inside = home is not None and folder.parent == home
        if inside:
            shutil.rmtree(folder, ignore_errors=True)
        if folder.is_dir():
            kept.append(folder)
        elif inside:
            removed.append(folder)
    return removed, kept


def ensure_corpus(con: duckdb.DuckDBPyConnection, name: str, model: str, tokens: int | None) -> Corpus:
    """The corpus `name`; `builtin` is created on first use (at least `tokens` or 250k tokens)."""
    corpus = get_corpus(con, name)
    if corpus is None and name == "builtin":
        return add_corpus(con, name, "builtin", model, tokens=max(tokens or 0, BUILTIN_TOKENS))
    if corpus is None:
        from store.corpora import require_corpus
        return require_corpus(con, name)
    if corpus.model != model:
        raise InputError(f"corpus {name!r} was tokenised for {corpus.model}, not {model}; "
                         f"add another corpus for {model}")
    return corpus
