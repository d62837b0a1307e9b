"""One way to open the store: `connect(path, read_only=...)`, migrated to the newest schema on open.

DuckDB allows one writing process or many reading processes on a file, never both. Jobs therefore hold
connections only for short transactions, and opening waits while another process holds the lock instead of
failing: a job never throws away what it computed because another job was writing. By default it waits as
long as the lock is held, saying so once on stderr; the UI passes a short `wait_s` and shows "busy" instead.
"""
from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Iterator

import duckdb

from store.errors import InputError
from store.faults import crash_point
from store.migrations import latest_version, migrate

NOTICE_AFTER_S = 1.0
"""A wait for the lock longer than this is announced on stderr (once per connection)."""


def is_lock_error(exc: Exception) -> bool:
    # another process holds the file ("Could not set lock"), or this process has it open with the other
    # read_only setting ("different configuration"; e.g. the UI saving a label while a page reads)
    text = str(exc).lower()
    return "lock" in text or "conflicting" in text or "different configuration" in text


def connect(path: str | Path = ":memory:", read_only: bool = False,
            wait_s: float | None = None) -> duckdb.DuckDBPyConnection:
    """Open the store at `path` (":memory:" for tests); a writable connection migrates the schema.

    While another process holds the file, wait up to `wait_s` seconds (None: as long as it takes, with one
    line on stderr), then raise DuckDB's lock error. InputError for a file that is not a DuckDB store or a
    store written by a newer SparseScope.
    """
    con = _open(path, read_only, wait_s)
    try:
        _check_version(con, path)
        if not read_only:
            migrate(con)
    except BaseException:
        con.close()
        raise
    return con


def _open(path: str | Path, read_only: bool, wait_s: float | None) -> duckdb.DuckDBPyConnection:
    start = time.monotonic()
    delay, told = 0.05, False
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if not is_lock_error(exc):
                if "not a valid duckdb database" in str(exc).lower():
                    raise InputError(f"{path} is not a SparseScope store (not a DuckDB database file)") from None
                raise
            waited = time.monotonic() - start
            if wait_s is not None and waited > wait_s:
                raise
            if wait_s is None and not told and waited > NOTICE_AFTER_S:
                print(f"waiting for the store {path}: another process is writing to it (Ctrl+C stops)",
                      file=sys.stderr, flush=True)
                told = True
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def _check_version(con: duckdb.DuckDBPyConnection, path: str | Path) -> None:
    try:
        found = con.execute("SELECT coalesce(max(id), 0) FROM _migrations").fetchone()[0]
    except duckdb.CatalogException:  # a new store (no _migrations yet)
        return
    if int(found) > latest_version():
        raise InputError(f"the store {path} was written by a newer SparseScope (schema {found}; this one "
                         f"knows up to {latest_version()}): upgrade SparseScope to open it")


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection, name: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """All-or-nothing block: commit on success, roll back on any exception.

    A job's final write names its transaction (e.g. "train"): the fault tests can then kill the process right
    before the commit (crash point NAME.commit) and right after it (NAME.committed), see store/faults.py.
    """
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        if name:
            crash_point(f"{name}.commit")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
    if name:
        crash_point(f"{name}.committed")


@contextlib.contextmanager
def borrow(store: duckdb.DuckDBPyConnection | str | Path,
           read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """`store` itself when it is an open connection (left open), else a short session on the store at that path.

    Long jobs take the store's path and open it only for their short reads and their final transaction, so
    other processes can write in between; tests pass an in-memory connection instead.
    """
    if isinstance(store, duckdb.DuckDBPyConnection):
        yield store
        return
    with session(store, read_only=read_only) as con:
        yield con


@contextlib.contextmanager
def session(path: str | Path, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection that is always closed (keeps the write lock brief)."""
    con = connect(path, read_only=read_only)
    try:
        yield con
    finally:
        con.close()
