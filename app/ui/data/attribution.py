"""The Attribution page's reads, cached: the stored graphs (`sparsescope attribute`), one graph's document, and the
labels and explanations of the features its nodes name (for the hover)."""
from __future__ import annotations

import duckdb
import streamlit as st

from app.ui.data import cache
from store import explanations as explained
from store import graphs as repo
from store import queries
from store.errors import InputError


def _list(con) -> list[repo.GraphRow]:
    try:
        return repo.list_graphs(con)
    except duckdb.CatalogException:  # a store from before the graphs migration: `sparsescope ui` migrates on start
        return []


@st.cache_data(show_spinner=False, max_entries=32)
def graphs(db: str, version: tuple) -> list[repo.GraphRow]:
    """Every stored graph, newest first."""
    return cache._read(db, _list)


def _one(con, graph_id: int) -> tuple[repo.GraphRow, dict]:
    found = repo.get_graph(con, graph_id)
    if found is None:
        stored = [str(g.id) for g in repo.list_graphs(con)]
        raise InputError(f"no graph {graph_id} in the store (stored: {', '.join(stored) or 'none'})")
    return found


@st.cache_data(show_spinner=False, max_entries=32)
def graph(db: str, version: tuple, graph_id: int) -> tuple[repo.GraphRow, dict]:
    """One graph's row and its document (InputError for an id the store lacks)."""
    return cache._read(db, _one, graph_id)


def _notes(con, wanted: tuple[tuple[str, tuple[int, ...]], ...]) -> dict[tuple[str, int], str]:
    found: dict[tuple[str, int], str] = {}
    for dictionary, features in wanted:
        labels = queries.feature_notes(con, dictionary, features)
        try:
            texts = explained.explanations_of(con, dictionary, features)
        except duckdb.CatalogException:  # no explanations table before its migration
            texts = {}
        for feature in features:
            label = labels.get(feature, (None, None))[0]
            explanation = " | ".join(e.text for e in texts.get(feature, []))
            note = " \u00b7 ".join(part for part in (label, explanation) if part)
            if note:
                found[(dictionary, feature)] = note
    return found


@st.cache_data(show_spinner=False, max_entries=64)
def notes(db: str, version: tuple, wanted: tuple[tuple[str, tuple[int, ...]], ...]) -> dict[tuple[str, int], str]:
    """(dictionary, feature) -> its label and explanations joined ("label · explanation"), for ((dictionary,
    features), ...); features with neither are left out."""
    return cache._read(db, _notes, wanted)
