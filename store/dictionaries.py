"""Dictionaries, their training runs, training logs and evaluation metrics."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from store.db import transaction
from store.errors import InputError
from store.paths import check_name, confined

_HIST = re.compile(r"^(\w+)_hist:([-0-9.e+]+):([-0-9.e+]+)$")


@dataclass(frozen=True)
class DictionaryRow:
    name: str
    model: str
    """Model the dictionary reads ('' when unknown, e.g. trained on a user's activation file)."""
    hook: str
    arch: str
    d_in: int
    d_sae: int
    k: int | None
    path: str
    source: str = "trained"
    """'trained' by SparseScope, or where an imported dictionary came from."""
    id: int | None = None
    created: datetime | None = None


@dataclass(frozen=True)
class LogRow:
    step: int
    tokens: int
    loss: float
    fvu: float
    l0: float
    dead: float


_COLUMNS = "name, model, hook, arch, d_in, d_sae, k, path, source"


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> tuple | None:
    """First row of a query, with the result consumed (a pending result blocks `register` on this connection)."""
    rows = con.execute(sql, params).fetchall()
    return rows[0] if rows else None


def add_dictionary(con: duckdb.DuckDBPyConnection, row: DictionaryRow) -> int:
    """Insert a dictionary; InputError if the name is taken. Returns its id."""
    check_name(row.name)
    if get_dictionary(con, row.name) is not None:
        raise InputError(f"dictionary {row.name!r} already exists")
    con.execute(f"INSERT INTO dictionaries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [row.name, row.model, row.hook, row.arch, row.d_in, row.d_sae, row.k, row.path, row.source])
    return int(_one(con, "SELECT id FROM dictionaries WHERE name = ?", [row.name])[0])


def get_dictionary(con: duckdb.DuckDBPyConnection, name: str) -> DictionaryRow | None:
    row = _one(con, f"SELECT {_COLUMNS}, id, created FROM dictionaries WHERE name = ?", [name])
    return DictionaryRow(*row) if row else None


def list_dictionaries(con: duckdb.DuckDBPyConnection) -> list[DictionaryRow]:
    rows = con.execute(f"SELECT {_COLUMNS}, id, created FROM dictionaries ORDER BY id").fetchall()
    return [DictionaryRow(*row) for row in rows]


def require_dictionary(con: duckdb.DuckDBPyConnection, name: str) -> DictionaryRow:
    row = get_dictionary(con, name)
    if row is None:
        known = ", ".join(d.name for d in list_dictionaries(con)) or "none yet"
        raise InputError(f"unknown dictionary {name!r} (known: {known})")
    return row


def row_folder(row: DictionaryRow, root: str | os.PathLike | None) -> Path:
    """The dictionary's folder: as recorded, else ROOT/dictionaries/NAME when that exists (a store moved with its
    workspace); the recorded one when there is no root."""
    recorded = Path(row.path).expanduser()
    if recorded.is_dir() or root is None:
        return recorded
    moved = confined(Path(root) / "dictionaries", row.name, root=root)
    return moved if moved.is_dir() else recorded


def delete_dictionary(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Remove a dictionary with its runs, log and metrics (its files are the caller's business)."""
    require_dictionary(con, name)
    with transaction(con):
        for table, column in (("dictionary_metrics", "dictionary"), ("training_log", "dictionary"),
                              ("training_runs", "dictionary"), ("dictionaries", "name")):
            con.execute(f"DELETE FROM {table} WHERE {column} = ?", [name])


KILLED = "the process ended without a word (killed?)"
"""The reason of a run left 'running' by a process that died (found when the name is trained again)."""


def start_run(con: duckdb.DuckDBPyConnection, dictionary: str, run_id: str, config: dict) -> None:
    """Record a run as 'running' (a resumed run keeps its row). The caller holds the name's reservation, so an
    older run of the name still 'running' belongs to a dead process: it is marked failed."""
    with transaction(con):
        con.execute("UPDATE training_runs SET status = 'failed', reason = ?, finished = current_timestamp "
                    "WHERE dictionary = ? AND run_id <> ? AND status = 'running'", [KILLED, dictionary, run_id])
        con.execute("INSERT INTO training_runs (dictionary, run_id, config, status) VALUES (?, ?, ?, 'running') "
                    "ON CONFLICT DO UPDATE SET status = 'running', finished = NULL, reason = NULL",
                    [dictionary, run_id, json.dumps(config)])


def finish_run(con: duckdb.DuckDBPyConnection, dictionary: str, run_id: str, status: str = "finished",
               reason: str | None = None) -> None:
    """Close a run: 'finished', or 'failed' with the reason (one line)."""
    con.execute("UPDATE training_runs SET status = ?, reason = ?, finished = current_timestamp "
                "WHERE dictionary = ? AND run_id = ?", [status, reason, dictionary, run_id])


def get_run(con: duckdb.DuckDBPyConnection, dictionary: str) -> dict | None:
    """The newest run of a dictionary: run_id, config (dict), started, finished, status, reason."""
    row = _one(con, "SELECT run_id, config, started, finished, status, reason FROM training_runs "
               "WHERE dictionary = ? ORDER BY started DESC LIMIT 1", [dictionary])
    if row is None:
        return None
    return dict(run_id=row[0], config=json.loads(row[1]), started=row[2], finished=row[3], status=row[4],
                reason=row[5])


def unfinished_runs(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """Runs of names that have no dictionary: dictionary, run_id, status ('running' or 'failed'), reason."""
    rows = con.execute("SELECT r.dictionary, r.run_id, r.status, r.reason FROM training_runs r "
                       "WHERE r.status <> 'finished' AND r.dictionary NOT IN (SELECT name FROM dictionaries) "
                       "ORDER BY r.started").fetchall()
    return [dict(dictionary=d, run_id=i, status=s, reason=r) for d, i, s, r in rows]


def add_log(con: duckdb.DuckDBPyConnection, dictionary: str, run_id: str, rows: list[LogRow]) -> None:
    """Bulk-insert training log rows as one Arrow table (rows already stored for a step are replaced)."""
    if not rows:
        return
    table = pa.table({
        "dictionary": pa.array([dictionary] * len(rows), pa.string()),
        "run_id": pa.array([run_id] * len(rows), pa.string()),
        "step": pa.array([r.step for r in rows], pa.int32()),
        "tokens": pa.array([r.tokens for r in rows], pa.int64()),
        **{col: pa.array([float(getattr(r, col)) for r in rows], pa.float64())
           for col in ("loss", "fvu", "l0", "dead")},
    })
    con.register("_new_log", table)
    try:
        con.execute("INSERT OR REPLACE INTO training_log "
                    "SELECT dictionary, run_id, step, tokens, loss, fvu, l0, dead FROM _new_log")
    finally:
        con.unregister("_new_log")


def get_log(con: duckdb.DuckDBPyConnection, dictionary: str) -> list[LogRow]:
    rows = con.execute("SELECT step, tokens, loss, fvu, l0, dead FROM training_log WHERE dictionary = ? "
                       "ORDER BY run_id, step", [dictionary]).fetchall()
    return [LogRow(*row) for row in rows]


def set_metrics(con: duckdb.DuckDBPyConnection, dictionary: str, metrics: dict[str, float]) -> None:
    """Store (or replace) evaluation metrics; None and NaN are stored as NULL."""
    if not metrics:
        return
    values = [None if v is None or v != v else float(v) for v in metrics.values()]
    table = pa.table({"dictionary": pa.array([dictionary] * len(values), pa.string()),
                      "metric": pa.array(list(metrics), pa.string()),
                      "value": pa.array(values, pa.float64())})
    con.register("_new_metrics", table)
    try:
        con.execute("INSERT OR REPLACE INTO dictionary_metrics SELECT dictionary, metric, value FROM _new_metrics")
    finally:
        con.unregister("_new_metrics")


def get_metrics(con: duckdb.DuckDBPyConnection, dictionary: str) -> dict[str, float | None]:
    rows = con.execute("SELECT metric, value FROM dictionary_metrics WHERE dictionary = ? ORDER BY metric",
                       [dictionary]).fetchall()
    return dict(rows)


def histogram_metrics(name: str, edges: list[float], fractions: list[float]) -> dict[str, float]:
    """A histogram as metric rows `NAME_hist:LO:HI` -> fraction of tokens in [LO, HI)."""
    return {f"{name}_hist:{lo:g}:{hi:g}": frac for lo, hi, frac in zip(edges[:-1], edges[1:], fractions)}


def get_histogram(con: duckdb.DuckDBPyConnection, dictionary: str, name: str) -> list[tuple[float, float, float]]:
    """(lo, hi, fraction) bins of a histogram stored with `histogram_metrics`, in order."""
    bins = []
    for metric, value in get_metrics(con, dictionary).items():
        match = _HIST.match(metric)
        if match and match.group(1) == name:
            bins.append((float(match.group(2)), float(match.group(3)), value or 0.0))
    return sorted(bins)
