"""The store and analysis calls of the Steering page, cached (kept apart from cache.py, which other pages share).

- Dictionaries for steering are loaded into their own cached copies: steering feeds them flattened hook_z
  rows (it turns SAELens' hook_z reshaping off), which must not change the copies other pages use.
- The model is shared with the other pages (cache.model); generation holds a lock because hooks are
  registered on the shared model while a run streams.
- Runs are generated fresh on every click (they stream); storing one opens a short write connection the way
  cache.save_label does.
"""
from __future__ import annotations

import threading

import duckdb
import streamlit as st

from app.ui.data import cache
from store import steering as runs_repo
from store.errors import InputError

DEFAULT_MODEL = "smollm2-135m-instruct"


@st.cache_resource
def model_lock() -> threading.Lock:
    return threading.Lock()


def _max_acts(con, name: str) -> dict[int, float]:
    try:
        return runs_repo.feature_max_acts(con, name)
    except duckdb.CatalogException:  # a store from before the features migration
        return {}


@st.cache_data(show_spinner=False, max_entries=64)
def max_acts(db: str, version: tuple, name: str) -> dict[int, float]:
    """features.max_act of an analysed dictionary (empty when it is not analysed)."""
    return cache._read(db, _max_acts, name)


def _runs(con, dictionary: str | None, limit: int) -> list[runs_repo.SteeringRun]:
    try:
        return runs_repo.list_runs(con, dictionary, limit)
    except duckdb.CatalogException:  # no steering_runs table until `sparsescope ui` migrates the store
        return []


@st.cache_data(show_spinner=False, max_entries=64)
def stored_runs(db: str, version: tuple, dictionary: str | None = None, limit: int = 20) -> list:
    """The newest stored runs (of one dictionary when given)."""
    return cache._read(db, _runs, dictionary, limit)


def dictionaries(rows: dict, names: list[str]) -> dict:
    """SteerDictionary per name from the dictionaries' store rows (name -> DictionaryRow)."""
    from analysis.steering.lab import SteerDictionary

    found = {}
    for name in names:
        if name not in rows:
            raise InputError(f"unknown dictionary {name!r} (known: {', '.join(sorted(rows)) or 'none yet'})")
        row = rows[name]
        sae = cache.dictionary(name, cache.stamp(row.path))
        found[name] = SteerDictionary(name, sae, hook=row.hook or None, max_acts=cache.fetch(max_acts, name),
                                      model=row.model)
    return found


def model(name: str):
    return cache.model(name)


def record(result) -> int:
    """Store a finished run on a short write connection (cache.StoreBusy if a job keeps the store locked)."""
    from analysis.steering.runs import record_run

    with cache.writing() as con:
        return record_run(con, result)
