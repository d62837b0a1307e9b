"""The Jobs page's calls: the job list (cached per store version), starting and cancelling jobs, their live progress
and log tails (read from the job's files, never cached: they change while the store does not)."""
from __future__ import annotations

from dataclasses import dataclass

import duckdb
import streamlit as st

from app.jobs import forms, launch
from app.jobs.progress import Progress
from app.ui.data import cache
from store import jobs as repo
from store.errors import InputError

LIMIT = 200
"""Jobs listed (newest first)."""
POLL_S = 1.0
"""How often the Jobs page redraws its running jobs (only while one runs, and only that part of the page)."""
LOG_LINES = 12
"""Log lines shown under a running job."""


@dataclass(frozen=True)
class Running:
    """A running job as the Jobs page redraws it every POLL_S."""
    job: repo.Job
    progress: Progress | None
    log: str


def _list(con, limit: int) -> list[repo.Job]:
    try:
        return repo.list_jobs(con, limit)
    except duckdb.CatalogException:  # a store from before migration 0010: no job was ever started on it
        return []


@st.cache_data(show_spinner=False, max_entries=16)
def job_rows(db: str, version: tuple, limit: int = LIMIT) -> list[repo.Job]:
    return cache._read(db, _list, limit)


def jobs() -> list[repo.Job]:
    """Every job, newest first; a job whose process is gone without an outcome is marked failed first."""
    if not cache.workspace().db_path.exists():  # nothing has run here yet: the first job creates the store
        return []
    rows = cache.fetch(job_rows, LIMIT)
    gone = [job for job in rows if launch.lost(job)]
    if gone:
        try:
            with cache.writing() as con:
                for job in gone:
                    repo.mark_lost(con, job.id)
        except (cache.StoreBusy, cache.ReadOnly):
            return rows  # the next look marks them
        rows = cache.fetch(job_rows, LIMIT)
    return rows


def running(lines: int = LOG_LINES) -> list[Running]:
    """What each poll of the Jobs page reads: the active jobs, each with its live progress and log tail."""
    return [Running(job, progress(job), log_tail(job, lines)) for job in jobs() if job.active]


def start(command: str, values: dict) -> repo.Job:
    """Check the form (InputError, nothing written), add the job's row, start its process."""
    argv = forms.argv(command, values)
    ws = cache.workspace()
    with cache.writing() as con:
        job = launch.create(con, ws, argv)
    try:
        launch.spawn(ws, job)
    except OSError as exc:
        with cache.writing() as con:
            repo.finish_job(con, job.id, "failed", None, f"the job could not start: {exc}")
        raise InputError(f"the job could not start: {exc}") from None
    return job


def cancel(job: repo.Job) -> None:
    """Ask the job's process to stop; a job without a process to ask gets its outcome here."""
    if launch.cancel(job):
        return
    with cache.writing() as con:
        if job.pid is None:
            repo.finish_job(con, job.id, "cancelled", None, "cancelled before it started")
        else:
            repo.mark_lost(con, job.id)


def progress(job: repo.Job) -> Progress | None:
    return launch.progress(job)


def log_tail(job: repo.Job, lines: int = 30) -> str:
    return launch.log_tail(job.log_path, lines)


def results_changed() -> None:
    """A job finished: what Home and the pages list is read again (the store version changes too)."""
    for fn in (cache.overview, cache.analysed, job_rows):
        fn.clear()
