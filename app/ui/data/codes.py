"""The calls of the code search page, cached: a codebook dictionary's codes ranked for a regex over its corpus."""
from __future__ import annotations

import streamlit as st

from app.ui.data import cache

TOKEN_BUDGETS = (10_000, 25_000, 50_000, 100_000)
"""Corpus tokens a search may read (the CLI's `codes --tokens` defaults to 100,000)."""


def has_codes(arch: str) -> bool:
    """The stored architecture `arch` chooses discrete codes (a codebook dictionary)."""
    from sae.dictionaries import lookup

    return lookup(arch).has_codes


def _contexts(con, corpus: str, n_contexts: int) -> list[list[int]]:
    from store.corpora import context_tokens

    return context_tokens(con, corpus, 0, n_contexts)


@st.cache_data(show_spinner="encoding the corpus...", max_entries=32)
def search(db: str, version: tuple, model_name: str, hook: str, name: str, stamp: int, corpus: str, ctx: int,
           tokens: int, regex: str, limit: int = 50) -> list:
    """analysis.features.codes.search_tokens over the first `tokens` tokens (whole contexts of `ctx`) of `corpus`."""
    import torch

    from analysis.features.codes import check_regex, search_tokens

    check_regex(regex)  # a bad regex is one line before anything is read or run
    token_ids = torch.tensor(cache._read(db, _contexts, corpus, max(1, -(-tokens // ctx))), dtype=torch.long)
    sae = cache.dictionary(name, stamp)
    with cache.using_model(model_name) as lm:
        return search_tokens(lm, sae, hook, token_ids, regex, limit=limit)
