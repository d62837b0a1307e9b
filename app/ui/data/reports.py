"""The report exports the UI builds, cached per store version (the "Export report" control reads these)."""
from __future__ import annotations

import streamlit as st

from analysis.reports import Selection, collect_report, report_bytes
from app.ui.data import cache
from app.ui.data.readers import READERS


@st.cache_data(show_spinner=False, max_entries=16)
def report_file(db: str, version: tuple, dictionary: str, features: tuple[int, ...] | None, fmt: str,
                steering: tuple[str, ...], heads: bool, top: int = 10) -> bytes:
    """The report as bytes (features None: the `top` densest); `version` (cache.version) makes a commit to
    the store miss the cache."""
    selection = Selection(features=features) if features is not None else Selection(top=top, by="density")
    with READERS.cursor(db, cache.READ_WAIT_S) as con:
        report = collect_report(con, dictionary, selection, steering=list(steering), heads=heads)
    return report_bytes(report, fmt)


def _model_dictionaries(con, model: str) -> list[tuple[str, str]]:
    return [tuple(r) for r in con.execute(
        "SELECT a.dictionary, coalesce(d.hook, '') FROM analyses a LEFT JOIN dictionaries d ON d.name = a.dictionary "
        "WHERE a.model = ? ORDER BY a.dictionary", [model]).fetchall()]


@st.cache_data(show_spinner=False, max_entries=16)
def model_dictionaries(db: str, version: tuple, model: str) -> list[tuple[str, str]]:
    """(dictionary, hook) of every analysed dictionary of `model`."""
    with READERS.cursor(db, cache.READ_WAIT_S) as con:
        return _model_dictionaries(con, model)
