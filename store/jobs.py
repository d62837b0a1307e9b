"""Jobs started from the web UI (migration 0010): one row per run of a `sparsescope` command in its own process.

A job moves queued -> running -> finished / failed / cancelled. The UI adds the row (queued), the wrapper
process (app/jobs/run.py) marks it running with its pid and the command's process group, and records the
exit status when the command ends; a look that finds the wrapper gone with no outcome marks the job failed
(`mark_lost`). Every function is one short statement: the store has one writer at a time, and the jobs
themselves write to it.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb

from store.errors import InputError

STATUSES = ("queued", "running", "finished", "failed", "cancelled")
ACTIVE = ("queued", "running")
"""A job in one of these may still change; the others are its outcome."""
LOST = "the process ended without reporting"


@dataclass(frozen=True)
class Job:
    id: str
    command: str
    argv: list[str]
    """The arguments after `sparsescope` (without the workspace option, which the runner adds)."""
    status: str
    pid: int | None
    """The wrapper process: alive exactly as long as the job has no outcome."""
    pgid: int | None
    """The command's process group (what cancel signals)."""
    host: str | None
    exit_code: int | None
    message: str | None
    log_path: str
    progress: dict | None
    created: datetime
    started: datetime | None
    finished: datetime | None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def seconds(self) -> float | None:
        """How long it ran (so far, for an active job)."""
        if self.started is None:
            return None
        return ((self.finished or now()) - self.started).total_seconds()


_COLUMNS = ("id, command, argv, status, pid, pgid, host, exit_code, message, log_path, progress, created, "
            "started, finished")


def now() -> datetime:
    """UTC without a zone: what every timestamp of this table holds."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_id() -> str:
    """A job id: sortable by start time, unique without asking the store."""
    return f"{now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def _row(row: tuple) -> Job:
    (id_, command, argv, status, pid, pgid, host, exit_code, message, log_path, progress, created, started,
     finished) = row
    return Job(id_, command, json.loads(argv), status, pid, pgid, host, exit_code, message, log_path,
               json.loads(progress) if progress else None, created, started, finished)


def add_job(con: duckdb.DuckDBPyConnection, job_id: str, argv: list[str], log_path: str) -> Job:
    """A queued job running `sparsescope ARGV` (argv[0] is the command)."""
    if not argv:
        raise InputError("a job needs a command")
    con.execute("INSERT INTO jobs (id, command, argv, status, log_path, created) VALUES (?, ?, ?, 'queued', ?, ?)",
                [job_id, argv[0], json.dumps(list(argv)), log_path, now()])
    return get_job(con, job_id)


def get_job(con: duckdb.DuckDBPyConnection, job_id: str) -> Job:
    rows = con.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", [job_id]).fetchall()
    if not rows:
        raise InputError(f"no job {job_id!r}")
    return _row(rows[0])


def list_jobs(con: duckdb.DuckDBPyConnection, limit: int = 100) -> list[Job]:
    """Newest first."""
    rows = con.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY created DESC, id DESC LIMIT ?",
                       [int(limit)]).fetchall()
    return [_row(r) for r in rows]


def mark_running(con: duckdb.DuckDBPyConnection, job_id: str, pid: int, pgid: int, host: str) -> bool:
    """Record the wrapper and the command's process group; False when the job is no longer queued (cancelled or
    given up before its wrapper got the store): the wrapper then stops its command."""
    rows = con.execute("UPDATE jobs SET status = 'running', pid = ?, pgid = ?, host = ?, started = ? "
                       "WHERE id = ? AND status = 'queued' RETURNING id", [pid, pgid, host, now(), job_id]).fetchall()
    return bool(rows)


def finish_job(con: duckdb.DuckDBPyConnection, job_id: str, status: str, exit_code: int | None,
               message: str | None, progress: dict | None = None) -> bool:
    """The job's outcome (finished, failed or cancelled); False when it had one already."""
    if status not in STATUSES or status in ACTIVE:
        raise InputError(f"{status!r} is not an outcome of a job")
    rows = con.execute("UPDATE jobs SET status = ?, exit_code = ?, message = ?, progress = ?, finished = ? "
                       "WHERE id = ? AND status IN ('queued', 'running') RETURNING id",
                       [status, exit_code, message, json.dumps(progress) if progress is not None else None, now(),
                        job_id]).fetchall()
    return bool(rows)


def mark_lost(con: duckdb.DuckDBPyConnection, job_id: str, message: str = LOST) -> bool:
    """A job whose wrapper is gone without an outcome: failed (no-op when the outcome arrived meanwhile)."""
    return finish_job(con, job_id, "failed", None, message)
