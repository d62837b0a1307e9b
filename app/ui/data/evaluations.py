"""The Evaluations page's reads, cached: the stored dictionaries' folders (a store read), and the task evaluations
in them (store/task_evals.py), keyed by the result files' stamp so a new `sparsescope eval-task` run shows on the
next page run."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.ui.data import cache
from store import task_evals as repo


@st.cache_data(show_spinner=False, max_entries=16)
def folders(db: str, version: tuple) -> tuple[tuple[str, str], ...]:
    """(name, folder) of every stored dictionary (a moved workspace's folders found under it)."""
    root = Path(db).parent
    return tuple((name, str(folder)) for name, folder in cache._read(db, repo.dictionary_folders, root))


@st.cache_data(show_spinner=False, max_entries=16)
def _evaluations(found: tuple[tuple[str, str], ...], stamp: tuple) -> tuple[list[repo.TaskEval], list[str]]:
    return repo.task_evals_in([(name, Path(folder)) for name, folder in found])


def evaluations() -> tuple[list[repo.TaskEval], list[str]]:
    """Every stored task evaluation, by dictionary then run, and a note per result file skipped."""
    found = cache.fetch(folders)
    return _evaluations(found, repo.files_stamp([(name, Path(folder)) for name, folder in found]))
