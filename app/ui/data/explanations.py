"""The explanation reads of the feature page, the browser, the word search and steer by words, cached.

Every function takes the store's fingerprint (`version`) like cache.py's readers, so an `sparsescope explain` run
shows on the next page view. A store from before the explanations migration reads as one without explanations.
"""
from __future__ import annotations

from typing import Callable

import duckdb
import streamlit as st

from app.ui.data import cache
from store import explanations as repo


def _or_empty(fn: Callable, empty):
    def read(con, *args):
        try:
            return fn(con, *args)
        except duckdb.CatalogException:  # no explanations table until `sparsescope ui` migrates the store
            return empty
    return read


@st.cache_data(show_spinner=False, max_entries=256)
def of_feature(db: str, version: tuple, dictionary: str, feature: int) -> list[repo.Explained]:
    """One feature's explanations (by explainer) with their scores."""
    found = cache._read(db, _or_empty(repo.explanations_of, {}), dictionary, [feature])
    return found.get(feature, [])


def _texts(con, dictionary: str, features: tuple[int, ...]) -> dict[int, str]:
    found = repo.explanations_of(con, dictionary, features)
    return {f: " | ".join(e.text for e in items) for f, items in found.items()}


@st.cache_data(show_spinner=False, max_entries=256)
def texts(db: str, version: tuple, dictionary: str, features: tuple[int, ...]) -> dict[int, str]:
    """feature -> its explanations' text (several explainers' joined by " | "); unexplained features left out."""
    return cache._read(db, _or_empty(_texts, {}), dictionary, features)


@st.cache_data(show_spinner=False, max_entries=64)
def kinds(db: str, version: tuple, dictionary: str) -> list[tuple[str, str, str]]:
    """(explainer, scorer, metric) of every score stored for `dictionary`."""
    return cache._read(db, _or_empty(repo.score_kinds, []), dictionary)


@st.cache_data(show_spinner=False, max_entries=256)
def scored(db: str, version: tuple, dictionary: str, kind: tuple[str, str, str], min_value: float | None,
           descending: bool, limit: int, offset: int) -> repo.ScoredPage:
    """One page of features ordered by a metric `kind` = (explainer, scorer, metric), at least `min_value`."""
    return cache._read(db, _or_empty(repo.scored_features, repo.ScoredPage([], 0)), dictionary, *kind, min_value,
                       descending, limit, offset)


@st.cache_data(show_spinner=False, max_entries=128)
def by_words(db: str, version: tuple, words: str, limit: int,
             dictionary: str | None = None) -> list[repo.SearchResult]:
    """Features of every dictionary (or one) whose label, notes or explanation contain the words, best first."""
    return cache._read(db, _or_empty(repo.search_explanations, []), words, limit, dictionary)
