"""The store reads and model work of the feature page's attention-output (hook_z) block, cached.

Reads go through cache.fetch (fn(db, version, ...)); DFA runs on the shared model inside cache.using_model (its
lock), on the dictionary from cache.dictionary (name + weights stamp). Every input is an argument.
"""
from __future__ import annotations

import streamlit as st

from app.ui.data import cache
from store.corpora import context_tokens
from store.heads import feature_heads


@st.cache_data(show_spinner=False, max_entries=256)
def head_shares(db: str, version: tuple, dictionary: str, feature: int) -> list[float]:
    """The feature's stored head attribution (feature_heads, written by analyze), indexed by head; [] if none."""
    return cache._read(db, feature_heads, dictionary, feature)


def _context(con, corpus: str, context_id: int) -> tuple[int, ...]:
    rows = context_tokens(con, corpus, context_id, context_id + 1)
    return tuple(rows[0]) if rows else ()


@st.cache_data(show_spinner=False, max_entries=256)
def context(db: str, version: tuple, corpus: str, context_id: int) -> tuple[int, ...]:
    """Token ids of one stored context (empty if the corpus no longer holds it)."""
    return cache._read(db, _context, corpus, context_id)


@st.cache_data(show_spinner="computing DFA...", max_entries=128)
def _example_dfa(model_name: str, name: str, stamp: int, hook: str, token_ids: tuple[int, ...], dest: int,
                 feature: int):
    import torch

    from analysis.heads.dfa import tokens_dfa

    sae = cache.dictionary(name, stamp)
    with cache.using_model(model_name) as lm:
        tokens = torch.tensor([token_ids], dtype=torch.long)
        return tokens_dfa(lm, sae, tokens, dest=dest, features=[feature], hook=hook)


def example_dfa(model_name: str, name: str, path: str, hook: str, token_ids: tuple[int, ...], dest: int,
                feature: int):
    """analysis.heads.dfa.tokens_dfa of one example: its context up to its token, read at that token.
    None when the dictionary's weights are not on disk."""
    stamp = cache.stamp(path)
    if not stamp:
        return None
    return cache.compute(_example_dfa, model_name, name, stamp, hook, token_ids[:dest + 1], dest, feature)
