"""The calls of the Search page, cached (kept apart from cache.py, which other pages share).

The forward pass runs on the model every session shares, inside cache.using_model (its one lock); the dictionaries
are cache.dictionary's copies. Labels and densities are read apart from the forward pass, keyed on the store's
fingerprint, so a label saved elsewhere shows on the next run without running the model again.
"""
from __future__ import annotations

import duckdb
import streamlit as st

from app.ui.data import cache


@st.cache_data(show_spinner="running the model...", max_entries=64)
def search(model_name: str, dictionaries: tuple[tuple[str, str, int], ...], text: str, top: int):
    """analysis.features.search_text on `text` with the dictionaries ((name, hook, stamp), ...) of one model,
    without labels (see `annotate`)."""
    from analysis.features.search_text import search_text

    saes = {name: (hook, cache.dictionary(name, stamp)) for name, hook, stamp in dictionaries}
    with cache.using_model(model_name) as lm:
        return search_text(lm, text, saes, top)


def _notes(con, wanted: tuple[tuple[str, tuple[int, ...]], ...]) -> tuple[dict, set[str]]:
    from analysis.features.search_text import read_notes

    try:
        return read_notes(con, dict(wanted))
    except duckdb.CatalogException:  # a store from before the features migration: nothing analysed
        return {}, set()


@st.cache_data(show_spinner=False, max_entries=64)
def notes(db: str, version: tuple, wanted: tuple[tuple[str, tuple[int, ...]], ...]) -> tuple[dict, set[str]]:
    """(dictionary -> feature -> (label, density), analysed dictionaries) for ((dictionary, features), ...)."""
    return cache._read(db, _notes, wanted)


def annotate(result):
    """`result` with its features' labels and densities from the store."""
    from analysis.features.search_text import with_notes

    wanted = tuple((name, tuple(ids)) for name, ids in result.features().items())
    found, analysed = cache.fetch(notes, wanted)
    return with_notes(result, found, analysed)
