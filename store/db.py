"""One way to open the store: `connect(path, read_only=...)`, migrated to the newest schema on open.

DuckDB allows one writing process or many reading processes on a file, never both. Jobs therefore hold
write connections only for short transactions, and opening retries for a while when another process
holds the lock instead of failing at once.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Iterator

import duckdb

from store.migrations import migrate

LOCK_WAIT_S = 30.0


def is_lock_error(exc: Exception) -> bool:
    # another process holds the file ("Could not set lock"), or this process has it open with the other
    # read_only setting ("different configuration"; e.g. the UI saving a label while a page reads)
    text = str(exc).lower()
    return "lock" in text or "conflicting" in text or "different configuration" in text


def connect(path: str | Path = ":memory:", read_only: bool = False,
            wait_s: float = LOCK_WAIT_S) -> duckdb.DuckDBPyConnection:
    """Open the store at `path` (":memory:" for tests); a writable connection migrates the schema."""
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if not is_lock_error(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    if not read_only:
        migrate(con)
    return con


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All-or-nothing block: commit on success, roll back on any exception."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


@contextlib.contextmanager
def session(path: str | Path, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection that is always closed (keeps the write lock brief)."""
    con = connect(path, read_only=read_only)
    try:
        yield con
    finally:
        con.close()
