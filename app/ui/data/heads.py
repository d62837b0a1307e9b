"""The store and analysis calls of the Heads page, cached (kept apart from cache.py, which other pages share).

Reads go through cache.fetch (fn(db, version, ...)); model work through cache.compute with the shared model,
forward passes inside cache.using_model (its lock). Every input is an argument, so the cache keys are complete.
"""
from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import streamlit as st

from app.ui.data import cache
from store import heads as repo
from store.corpora import context_tokens


def _runs(con) -> list[repo.HeadRun]:
    try:
        return repo.list_head_runs(con)
    except duckdb.CatalogException:  # a store from before the heads migration: `sparsescope ui` migrates it
        return []


@st.cache_data(show_spinner=False, max_entries=32)
def runs(db: str, version: tuple) -> list[repo.HeadRun]:
    return cache._read(db, _runs)


def _grid(con, model: str, corpus: str, score: str, shape: tuple[int, int]) -> np.ndarray:
    grid = np.full(shape, np.nan)
    for layer, head, value in repo.score_grid(con, model, corpus, score):
        grid[layer, head] = value
    return grid


@st.cache_data(show_spinner=False, max_entries=128)
def grid(db: str, version: tuple, model: str, corpus: str, score: str, shape: tuple[int, int]) -> np.ndarray:
    """[n_layers, n_heads] values of one score."""
    return cache._read(db, _grid, model, corpus, score, shape)


@dataclass(frozen=True)
class HeadDetail:
    scores: dict[str, float]
    examples: list[repo.HeadExample]
    example_tokens: dict[int, list[int]]
    """context id -> its token ids."""


def _detail(con, model: str, corpus: str, layer: int, head: int) -> HeadDetail:
    examples = repo.head_examples(con, model, corpus, layer, head)
    tokens = {e.context_id: context_tokens(con, corpus, e.context_id, e.context_id + 1)[0] for e in examples}
    return HeadDetail(repo.head_scores(con, model, corpus, layer, head), examples, tokens)


@st.cache_data(show_spinner=False, max_entries=256)
def detail(db: str, version: tuple, model: str, corpus: str, layer: int, head: int) -> HeadDetail:
    return cache._read(db, _detail, model, corpus, layer, head)


def _means(con, model: str, corpus: str) -> dict:
    return repo.head_means(con, model, corpus)


@st.cache_data(show_spinner=False, max_entries=8)
def means(db: str, version: tuple, model: str, corpus: str) -> dict:
    return cache._read(db, _means, model, corpus)


@st.cache_data(show_spinner=False, max_entries=512)
def str_tokens(model_name: str, token_ids: tuple[int, ...]) -> list[str]:
    import torch

    return [str(t) for t in cache.model(model_name).to_str_tokens(torch.tensor(token_ids, dtype=torch.long))]


@st.cache_data(show_spinner="running the model...", max_entries=64)
def pattern(model_name: str, prompt: str, layer: int, head: int):
    from analysis.heads.prompt import head_pattern

    with cache.using_model(model_name) as lm:
        return head_pattern(lm, prompt, layer, head)


@st.cache_data(show_spinner="ablating...", max_entries=64)
def ablation(model_name: str, prompt: str, layer: int, head: int, mode: str, mean_rows: dict | None):
    from analysis.heads.ablation import ablate_head, means_array

    with cache.using_model(model_name) as lm:
        mean_z = means_array(lm, mean_rows) if mean_rows else None
        return ablate_head(lm, prompt, layer, head, mode, mean_z=mean_z)


@st.cache_data(show_spinner="ablating every head...", max_entries=32)
def ranking(model_name: str, prompt: str, target: str):
    from analysis.heads.rank import rank_heads

    with cache.using_model(model_name) as lm:
        return rank_heads(lm, prompt, target=target or None)


@st.cache_data(show_spinner="reading the dictionary...", max_entries=256)
def _head_weights(model_name: str, name: str, stamp: int, feature: int) -> tuple[list[float], int]:
    from analysis.heads.dfa import feature_head_weights
    from analysis.heads.scan import n_kv_heads

    lm = cache.model(model_name)
    return feature_head_weights(cache.dictionary(name, stamp), lm.cfg.n_heads, feature), n_kv_heads(lm)


def feature_head_weights(model_name: str, name: str, path: str,
                         feature: int) -> tuple[list[float] | None, int | None]:
    """Head attribution of one feature of an attention-output dictionary and the model's KV head count."""
    stamp = cache.stamp(path)
    if not stamp or not model_name:  # no weights on disk, or no model to tell the head count
        return None, None
    return cache.compute(_head_weights, model_name, name, stamp, feature)


@st.cache_data(show_spinner="patching every head and residual position...", max_entries=32)
def patching(model_name: str, clean: str, corrupted: str, answer: str, wrong: str):
    """analysis.heads.patching.activation_patching on the shared model (held for every forward pass)."""
    from analysis.heads.patching import activation_patching

    with cache.using_model(model_name) as lm:
        return activation_patching(lm, clean, corrupted, answer, wrong)
