"""Every store and analysis call the UI makes, cached. The only module of the app with st.cache_*.

Caching: `st.cache_resource` holds what is expensive to build and safe to share (the model, dictionaries);
`st.cache_data` holds query and analysis results. Every cached function receives all of its inputs as
arguments, including `version`, a fingerprint of the store files: when any process commits to the store
the fingerprint changes and the next read misses the cache, so new results appear without a restart.

Concurrency: DuckDB lets one process write a file or many processes read it, never both at once, so
- reads go through app/ui/data/readers.py: one read-only instance for the whole UI process, a cursor per read,
  let go 2 s after the last read and at most 10 s after opening, so CLI jobs get the write lock within
  seconds (an open instance is what keeps page views fast: see that module);
- opening waits up to READ_WAIT_S while another process holds the write lock; if the lock is still held,
  `fetch` serves the last result it read for the same call (kept per process in `_last_good`) under one
  st.info line (BUSY), or stops the page with that line when it has none. Nothing shows a lock error;
  fresh results appear on the next run after the job closes its connection (the fingerprint changed);
- a label edit lets go of the read instance, opens a short write connection with retries for
  WRITE_WAIT_S, and raises StoreBusy when the store stays locked (the page keeps the edit and says so), or
  ReadOnly when the workspace cannot be written.

The model: every session shares one HookedTransformer per name (`model`), and TransformerLens keeps hooks and its
hook-context level on the model itself. So every forward pass the UI makes runs inside `using_model`, which holds
that model's one lock (steering streams hold it for the whole run) and removes any hook still attached when it
lets go: a page never sees another session's steering hooks.
"""
from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import duckdb
import streamlit as st

from app.ui.data.readers import READERS
from app.ui.widgets.common import md_escape, show_error
from store import db as store_db
from store import queries
from store.corpora import Corpus, list_corpora
from store.dictionaries import DictionaryRow, get_dictionary, get_metrics, list_dictionaries
from store.errors import InputError
from store.models import ModelRow, list_models
from store.workspace import READ_ONLY_ENV, Workspace

READ_WAIT_S = 2.0
"""How long a read waits for a writing job before the page says the store is busy."""
WRITE_WAIT_S = 5.0
BUSY = "the store is busy: a job is writing; results appear when it commits"
READ_ONLY = "this workspace is read-only: labels and steering runs cannot be saved"
LAST_GOOD_ENTRIES = 512


class StoreBusy(Exception):
    """Another process holds the store's write lock."""


class NoStore(Exception):
    """The workspace has no store file yet."""


class ReadOnly(Exception):
    """The workspace cannot be written (a read-only folder, file or file system)."""


def empty_message(ws: Workspace) -> str:
    return (f"The workspace {md_escape(str(ws.root))} has nothing to show yet. Run `sparsescope demo` to fill it (or "
            "`sparsescope train` and `sparsescope analyze` on your own model), then reload this page.")


# ------------------------------------------------------------------------------------- store access

def workspace() -> Workspace:
    """The workspace `sparsescope ui` was started on ($SPARSESCOPE_WORKSPACE, else ./workspace)."""
    return Workspace.resolve(create=False)


def version(db: str) -> tuple:
    """Fingerprint of the store files: changes whenever a process commits (the file or its WAL changes)."""
    stamp = []
    for path in (Path(db), Path(db + ".wal")):
        try:
            stat = path.stat()
            stamp.append((stat.st_mtime_ns, stat.st_size))
        except FileNotFoundError:
            stamp.append(None)
    return tuple(stamp)


def _read(db: str, fn: Callable, *args) -> Any:
    """fn(con, *args) on a read-only cursor of the UI's shared instance."""
    if not Path(db).exists():
        raise NoStore(db)
    # once a run found the store busy, its later reads fail fast instead of waiting again
    wait_s = 0.0 if getattr(_run, "busy_shown", False) else READ_WAIT_S
    try:
        with READERS.cursor(db, wait_s) as con:
            return fn(con, *args)
    except (duckdb.IOException, duckdb.ConnectionException) as exc:
        if store_db.is_lock_error(exc):
            raise StoreBusy(str(exc)) from None
        raise


_run = threading.local()  # per script-run thread: whether this run showed the BUSY line already


def begin_run() -> None:
    """Called by the router at the start of every script run."""
    _run.busy_shown = False


@st.cache_resource
def _last_good() -> tuple[OrderedDict, threading.Lock]:
    return OrderedDict(), threading.Lock()


def fetch(fn: Callable, *args) -> Any:
    """Call a cached reader fn(db, version, *args) on the workspace's store.

    Input errors stop the page with one st.error line; a missing store with the empty-workspace message;
    a busy store falls back to the last good result (see the module docstring).
    """
    ws = workspace()
    db = str(ws.db_path)
    key = (fn.__name__, db, args)
    memo, lock = _last_good()
    try:
        value = fn(db, version(db), *args)
    except NoStore:
        st.info(empty_message(ws))
        st.stop()
    except InputError as exc:
        show_error(exc)
    except StoreBusy:
        if not getattr(_run, "busy_shown", False):
            st.info(BUSY)
            _run.busy_shown = True
        with lock:
            if key not in memo:
                st.stop()
            return memo[key]
    with lock:
        memo[key] = value
        memo.move_to_end(key)
        while len(memo) > LAST_GOOD_ENTRIES:
            memo.popitem(last=False)
    return value


def compute(fn: Callable, *args) -> Any:
    """Call a cached model or analysis function; bad input stops the page with one st.error line."""

    try:
        return fn(*args)
    except InputError as exc:
        show_error(exc)


@contextlib.contextmanager
def writing() -> Iterator[duckdb.DuckDBPyConnection]:
    """The one way the UI writes: a short write connection to the workspace's store, with this process's reads
    held back meanwhile (StoreBusy if a job keeps the store locked)."""
    space = workspace()
    db = str(space.db_path)
    if os.environ.get(READ_ONLY_ENV) == "1":  # `sparsescope ui` found the store read-only
        raise ReadOnly(READ_ONLY)
    with READERS.writing(db):
        try:
            con = store_db.connect(db, read_only=False, wait_s=WRITE_WAIT_S)
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if store_db.is_lock_error(exc):
                raise StoreBusy(str(exc)) from None
            if not space.writable():
                raise ReadOnly(READ_ONLY) from None
            raise
        try:
            yield con
        finally:
            con.close()


def save_label(dictionary: str, feature: int, label: str, notes: str) -> None:
    """Write a label on a short write connection (StoreBusy if a job keeps the store locked)."""
    with writing() as con:
        queries.set_label(con, dictionary, feature, label, notes)


def random_feature(dictionary: str) -> int | None:
    """A random feature that fires at least once (not cached: every call draws again)."""
    return _read(str(workspace().db_path), queries.random_feature, dictionary)


# ------------------------------------------------------------------------------------- cached reads

@dataclass(frozen=True)
class Overview:
    models: list[ModelRow] = field(default_factory=list)
    corpora: list[Corpus] = field(default_factory=list)
    dictionaries: list[DictionaryRow] = field(default_factory=list)
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    analysed: dict[str, tuple[str, int]] = field(default_factory=dict)
    """dictionary -> (corpus, n_tokens) of its finished analysis."""
    usage: dict[str, queries.Usage] = field(default_factory=dict)
    """dictionary -> its features' (codes') usage and MP steps in its analysis."""

    @property
    def empty(self) -> bool:
        return not (self.models or self.corpora or self.dictionaries)


def _overview(con) -> Overview:
    try:
        dicts = list_dictionaries(con)
        return Overview(list_models(con), list_corpora(con), dicts, {d.name: get_metrics(con, d.name) for d in dicts},
                        {name: (corpus, n) for name, corpus, n in queries.analysed_dictionaries(con)},
                        queries.dictionary_usage(con))
    except duckdb.CatalogException:  # a store from before a migration: `sparsescope ui` migrates on start
        return Overview()


@st.cache_data(show_spinner=False, max_entries=32)
def overview(db: str, version: tuple) -> Overview:
    return _read(db, _overview)


def _analysed(con) -> dict[str, tuple[str, int]]:
    try:
        return {name: (corpus, n) for name, corpus, n in queries.analysed_dictionaries(con)}
    except duckdb.CatalogException:
        return {}


@st.cache_data(show_spinner=False, max_entries=32)
def analysed(db: str, version: tuple) -> dict[str, tuple[str, int]]:
    """dictionary -> (corpus, n_tokens) of every finished analysis (one small query, for pages that need no more)."""
    return _read(db, _analysed)


def _require_analysed(con, dictionary: str) -> None:
    known = [name for name, _, _ in queries.analysed_dictionaries(con)]
    if dictionary not in known:
        raise InputError(f"unknown dictionary {dictionary!r} (analysed: {', '.join(known) or 'none yet'})")


@dataclass(frozen=True)
class FeaturePage:
    card: queries.FeatureCard
    dictionary: DictionaryRow | None
    """None for an analysed dictionary whose row is gone from the dictionaries table."""
    n_features: int
    metrics: dict[str, float | None]
    """The dictionary's evaluation metrics (code usage and perplexity of a dictionary that chooses codes)."""

    @property
    def has_codes(self) -> bool:
        """The dictionary chooses discrete codes: its evaluation measured their usage (decided from the stored
        data, so the page needs no torch to look the architecture up)."""
        return "code_usage" in self.metrics


def _feature_page(con, dictionary: str, feature: int) -> FeaturePage:
    n = queries.count_features(con, dictionary)
    if not n:
        _require_analysed(con, dictionary)  # raises the error that names the analysed dictionaries
    if not 0 <= feature < n:
        raise InputError(f"feature {feature} is out of range: {dictionary} has features 0..{n - 1}")
    row = get_dictionary(con, dictionary)
    metrics = get_metrics(con, dictionary) if row is not None else {}
    return FeaturePage(queries.feature_card(con, dictionary, feature), row, n, metrics)


@st.cache_data(show_spinner=False, max_entries=256)
def feature_page(db: str, version: tuple, dictionary: str, feature: int) -> FeaturePage:
    """Everything the feature page shows, read on one connection."""
    return _read(db, _feature_page, dictionary, feature)


@st.cache_data(show_spinner=False, max_entries=256)
def summaries(db: str, version: tuple, dictionary: str, features: tuple[int, ...],
              n_tokens: int = 3) -> dict[int, queries.Summary]:
    return _read(db, queries.feature_summaries, dictionary, features, n_tokens)


@dataclass(frozen=True)
class FeatureTable:
    rows: list[queries.FeatureRow]
    n_features: int
    top_tokens: dict[int, list[str]]


def _features_table(con, dictionary: str, order_by: str, descending: bool, limit: int, offset: int,
                    lo: float, hi: float) -> FeatureTable:
    _require_analysed(con, dictionary)
    rows = queries.features_page(con, dictionary, order_by, descending, limit, offset, lo, hi)
    total = queries.count_features(con, dictionary, lo, hi)
    tops = queries.feature_summaries(con, dictionary, [r.feature for r in rows], 3)
    return FeatureTable(rows, total, {f: s.top_tokens for f, s in tops.items()})


@st.cache_data(show_spinner=False, max_entries=256)
def features_table(db: str, version: tuple, dictionary: str, order_by: str, descending: bool, limit: int,
                   offset: int, lo: float = 0.0, hi: float = 1.0) -> FeatureTable:
    """One page of features in [lo, hi] density, sorted, with how many there are and their top tokens."""
    return _read(db, _features_table, dictionary, order_by, descending, limit, offset, lo, hi)


SEARCHES = {"fires on token": queries.search_by_top_token, "promotes token": queries.search_by_logit_token,
            "label": queries.search_by_label}
"""Text searches of the feature browser."""


def _search(con, dictionary: str, how: str, text: str, limit: int) -> list[tuple[int, float | None]]:
    _require_analysed(con, dictionary)
    hits = SEARCHES[how](con, dictionary, text, limit=limit)
    return [(h.feature, getattr(h, "score", None)) for h in hits]


@st.cache_data(show_spinner=False, max_entries=128)
def search(db: str, version: tuple, dictionary: str, how: str, text: str, limit: int = 100):
    """[(feature, score)] of a text search (score None for label search)."""
    if how not in SEARCHES:
        raise InputError(f"unknown search {how!r} (choose from {', '.join(SEARCHES)})")
    return _read(db, _search, dictionary, how, text, limit)


# ------------------------------------------------------------------------------------- model and dictionaries

@st.cache_resource(show_spinner="loading the model...", max_entries=2)
def model(name: str):
    from sae.models import load_model

    return load_model(name)


@st.cache_resource
def model_lock(name: str) -> threading.RLock:
    """The one lock of model `name`, for every session (reentrant: a locked call may call another)."""
    return threading.RLock()


@contextlib.contextmanager
def using_model(name: str) -> Iterator:
    """The shared model `name`, for this thread alone until the block ends; see the module docstring."""
    lm = model(name)
    with model_lock(name):
        try:
            yield lm
        finally:
            if any(point.fwd_hooks or point.bwd_hooks for point in lm.hook_dict.values()):
                lm.reset_hooks(including_permanent=False)  # a hook left behind never reaches the next caller


@st.cache_resource(show_spinner="loading a dictionary...", max_entries=16)
def dictionary(name: str, stamp: int):
    """The workspace dictionary `name` on the model's device (analysis.dictionaries.open_dictionary); `stamp`
    (stamp(row.path), its weights' mtime) reloads it when it is saved again."""
    from analysis.dictionaries import open_dictionary

    ws = workspace()
    with READERS.cursor(str(ws.db_path), READ_WAIT_S) as con:
        return open_dictionary(ws, name, con=con)[1]


def stamp(path: str) -> int:
    """Modification time of a dictionary folder's weights (0 if it is missing)."""
    try:
        return (Path(path) / "sae_weights.safetensors").stat().st_mtime_ns
    except OSError:
        return 0


@st.cache_data(show_spinner="running the model...", max_entries=64)
def inspect(model_name: str, hook: str, dictionaries: tuple[tuple[str, int], ...], text: str):
    """analysis.features.inspector on `text` with the dictionaries ((name, stamp), ...) of one site."""
    from analysis.features.inspector import inspect_prompt

    saes = {name: dictionary(name, mtime) for name, mtime in dictionaries}
    with using_model(model_name) as lm:
        return inspect_prompt(lm, hook, text, saes)


@st.cache_data(show_spinner="matching decoder directions...", max_entries=16)
def compare(name_a: str, stamp_a: int, name_b: str, stamp_b: int):
    """analysis.compare of two dictionaries (Hungarian up to 8192 features a side, else greedy)."""
    from analysis.compare import compare_dictionaries

    try:
        return compare_dictionaries(dictionary(name_a, stamp_a), dictionary(name_b, stamp_b))
    except ValueError as exc:
        raise InputError(str(exc)) from None
