"""The store and analysis calls of the Steering page, cached (kept apart from cache.py, which other pages share).

- Dictionaries for steering are loaded into their own cached copies: steering feeds them flattened hook_z
  rows (it turns SAELens' hook_z reshaping off), which must not change the copies other pages use.
- The model is shared with the other pages: a run, streaming included, holds it through cache.using_model, since
  its hooks stay registered on the shared model while it streams.
- Runs are generated fresh on every click (they stream); storing one opens a short write connection the way
  cache.save_label does.
"""
from __future__ import annotations

from typing import Callable

import duckdb
import streamlit as st

from app.ui.data import cache
from store import steering as runs_repo
from store.errors import InputError

DEFAULT_MODEL = "smollm2-135m-instruct"


def _max_acts(con, name: str) -> dict[int, float]:
    try:
        return runs_repo.feature_max_acts(con, name)
    except duckdb.CatalogException:  # a store from before the features migration
        return {}


@st.cache_data(show_spinner=False, max_entries=64)
def max_acts(db: str, version: tuple, name: str) -> dict[int, float]:
    """features.max_act of an analysed dictionary (empty when it is not analysed)."""
    return cache._read(db, _max_acts, name)


def _propose(con, description: str, top: int, strength: float):
    from analysis.steering.describe import propose

    return propose(con, description, None, top, strength)


@st.cache_data(show_spinner=False, max_entries=64)
def proposal(db: str, version: tuple, description: str, top: int, strength: float):
    """analysis.steering.describe.propose over every dictionary (InputError when nothing matches)."""
    return cache._read(db, _propose, description, top, strength)


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


def steer(config, dictionaries: dict, numbers=None, on_step: Callable | None = None):
    """One steering run (analysis.steering.lab.SteerRun) on the shared model, holding it from binding (which may
    run the model) to the last measure; on_step(GenStep) after every token. Raises what SteerRun raises."""
    from analysis.steering.lab import SteerRun

    with cache.using_model(config.model) as lm:
        return SteerRun(lm, config, dictionaries, numbers).run(on_step)


def sweep(config, dictionaries: dict, strengths: list[float]) -> list:
    """analysis.steering.lab.sweep on the shared model, held for the whole sweep."""
    from analysis.steering.lab import sweep as run_sweep

    with cache.using_model(config.model) as lm:
        return run_sweep(lm, config, dictionaries, strengths)


def record(result) -> int:
    """Store a finished run on a short write connection (cache.StoreBusy if a job keeps the store locked,
    cache.ReadOnly if the workspace cannot be written)."""
    from analysis.steering.runs import record_run

    with cache.writing() as con:
        return record_run(con, result)
