"""Read-only access to the store for the UI process: one DuckDB instance shared by every read, held briefly.

Why not a fresh connection per query: opening a DuckDB file starts a database instance (thread pool, catalog,
empty buffer pool). On a 2-core machine that costs about three times the feature page's queries themselves
(~75 ms of CPU against ~20 ms), which breaks the page's latency budget. Why not one connection for the life
of the server: an open instance holds the file's shared lock, and a CLI job cannot write until it is let go.
So the pool
- opens the instance on the first read and gives every read its own cursor (reads may run in any thread);
- closes it IDLE_S after the last read finished, so a job waiting for the write lock (store.db.connect
  retries for 30 s) gets it about IDLE_S after the user stops clicking;
- holds it at most HOLD_S in one go: under continuous reads it drains, closes, and leaves the store free for
  GAP_S (longer than store.db.connect's longest back-off) before opening again, so a waiting job always
  finds a window;
- closes it on request before this process writes (DuckDB refuses a read-write connection in a process
  that has the file open read-only, and the other way round).
While a job holds the write lock, opening fails after the caller's wait and raises store.db's lock error.
"""
from __future__ import annotations

import atexit
import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import duckdb

from store import db as store_db

IDLE_S = 2.0
HOLD_S = 10.0
GAP_S = 1.5


@dataclass
class _Instance:
    con: duckdb.DuckDBPyConnection
    opened: float
    last: float
    users: int = 0
    draining: bool = False
    """No new reads: it closes when its current reads finish."""
    expired: bool = False
    """Held longer than hold_s: once closed, the store is left free for gap_s so a waiting writer gets in."""


class Readers:
    def __init__(self, idle_s: float = IDLE_S, hold_s: float = HOLD_S, gap_s: float = GAP_S):
        self.idle_s, self.hold_s, self.gap_s = idle_s, hold_s, gap_s
        self._cv = threading.Condition()
        self._open: dict[str, _Instance] = {}
        self._free_until: dict[str, float] = {}
        self._writes: dict[str, int] = {}
        self._reaper: threading.Thread | None = None

    @contextlib.contextmanager
    def cursor(self, db: str, wait_s: float) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only cursor on `db` for one read; waits up to wait_s for a writing process."""
        instance = self._acquire(db, wait_s)
        try:
            cursor = instance.con.cursor()
        except BaseException:
            self._release(db, instance)
            raise
        try:
            yield cursor
        finally:
            cursor.close()
            self._release(db, instance)

    @contextlib.contextmanager
    def writing(self, db: str, timeout_s: float = 5.0) -> Iterator[None]:
        """Around a write by this process: let go of `db`, and hold new reads back until the write is done."""
        with self._cv:
            self._writes[db] = self._writes.get(db, 0) + 1
        try:
            self.close(db, timeout_s)
            yield
        finally:
            with self._cv:
                self._writes[db] -= 1
                self._cv.notify_all()

    def close(self, db: str, timeout_s: float = 5.0) -> None:
        """Let go of `db` once its current reads finish."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            instance = self._open.get(db)
            if instance is None:
                return
            instance.draining = True
            while instance.users and time.monotonic() < deadline:
                self._cv.wait(0.05)
            if self._open.get(db) is instance:
                self._close(db, instance, gap=False)

    def close_all(self) -> None:
        for db in list(self._open):
            self.close(db, timeout_s=1.0)

    def _acquire(self, db: str, wait_s: float) -> _Instance:
        with self._cv:
            while True:
                now = time.monotonic()
                if self._writes.get(db):
                    self._cv.wait(0.05)
                    continue
                instance = self._open.get(db)
                if instance is not None and not instance.draining and now - instance.opened <= self.hold_s:
                    instance.users += 1
                    return instance
                if instance is not None:  # held too long, or closing for a write: wait until it is gone
                    instance.draining = True
                    instance.expired |= now - instance.opened > self.hold_s
                    if not instance.users:
                        self._close(db, instance, gap=True)
                    self._cv.wait(0.05)
                    continue
                free_until = self._free_until.get(db, 0.0)
                if now >= free_until:
                    break
                self._cv.wait(free_until - now)
        con = store_db.connect(db, read_only=True, wait_s=wait_s)  # outside the lock: it may wait
        with self._cv:
            now = time.monotonic()
            instance = self._open.get(db)
            if instance is None or instance.draining:
                if instance is not None:
                    con.close()  # lost a race with a draining instance: try again
                    return self._acquire(db, wait_s)
                instance = self._open[db] = _Instance(con, opened=now, last=now)
                self._start_reaper()
            else:  # another thread opened it meanwhile; ours shares its instance, so drop ours
                con.close()
            instance.users += 1
            return instance

    def _release(self, db: str, instance: _Instance) -> None:
        with self._cv:
            instance.users -= 1
            instance.last = time.monotonic()
            if not instance.users and self._open.get(db) is instance:
                expired = instance.expired or instance.last - instance.opened > self.hold_s
                if instance.draining or expired:
                    # the gap must follow every expiry, also one another reader noticed first (it set draining)
                    self._close(db, instance, gap=expired)
            self._cv.notify_all()

    def _close(self, db: str, instance: _Instance, gap: bool) -> None:
        """Close an instance without users (caller holds the lock)."""
        del self._open[db]
        instance.con.close()
        if gap:
            self._free_until[db] = time.monotonic() + self.gap_s
        self._cv.notify_all()

    def _start_reaper(self) -> None:
        if self._reaper is None:  # the reaper clears this under the lock as it exits
            self._reaper = threading.Thread(target=self._reap, name="sparsescope-readers", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        """Close instances idle for IDLE_S; exits when none is open."""
        with self._cv:
            while self._open:
                now = time.monotonic()
                for db, instance in list(self._open.items()):
                    if not instance.users and now - instance.last >= self.idle_s:
                        self._close(db, instance, gap=False)
                self._cv.wait(min(0.25, self.idle_s / 4))
            self._reaper = None


READERS = Readers()
"""The pool of this process (a module global: one per server process, shared by every session)."""
atexit.register(READERS.close_all)
