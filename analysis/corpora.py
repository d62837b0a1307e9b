"""Building corpora: tokenise a source with a model's tokenizer and keep the contexts in the store."""
from __future__ import annotations

from pathlib import Path

import duckdb

from sae.corpus import tokenize_source
from sae.models import load_tokenizer, prepends_bos
from store.corpora import Corpus, get_corpus, save_corpus
from store.errors import InputError

DEFAULT_CTX = 128
BUILTIN_TOKENS = 250_000


def add_corpus(con: duckdb.DuckDBPyConnection, name: str, source: str, model: str,
               tokens: int | None = None, ctx: int = DEFAULT_CTX, replace: bool = False) -> Corpus:
    """Tokenise `source` into contexts of `ctx` tokens for `model` and store them under `name`."""
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise InputError(f"corpus name {name!r} must be letters, digits, '-', '_' or '.'")
    if tokens is not None and tokens <= 0:
        raise InputError(f"--tokens must be positive (got {tokens})")
    if ctx < 2 or ctx > 8192:
        raise InputError(f"--ctx must be between 2 and 8192 (got {ctx})")
    if get_corpus(con, name) is not None and not replace:
        raise InputError(f"corpus {name!r} already exists (use --replace to rebuild it)")
    if source not in ("builtin",) and not source.startswith("hf:") and not Path(source).expanduser().exists():
        raise InputError(f"corpus source {source!r} is not 'builtin', 'hf:DATASET' or an existing path")
    bos = prepends_bos(model)
    contexts = tokenize_source(load_tokenizer(model), source, ctx, bos, tokens)
    corpus = Corpus(name=name, model=model, source=source, ctx=ctx, bos=bos,
                    n_contexts=len(contexts.token_ids), n_tokens=contexts.n_tokens)
    save_corpus(con, corpus, contexts.token_ids, contexts.texts, replace=replace)
    return corpus


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
