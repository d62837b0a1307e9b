"""Numbered, forward-only schema migrations, recorded in `_migrations`.

Each migration is a file `NNNN_name.sql` in this folder. A migration that has landed is never edited:
change the schema by adding the next number.
"""
from __future__ import annotations

import functools
import re
from importlib import resources

import duckdb

_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")


def available() -> list[tuple[int, str, str]]:
    """(number, name, sql) for every migration file, in order."""
    found = []
    for entry in resources.files(__name__).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [n for n, _, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"migration numbers must run 1..N without gaps, found {numbers}")
    return found


@functools.lru_cache(maxsize=1)
def latest_version() -> int:
    """The newest schema this version of SparseScope knows."""
    return available()[-1][0]


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    con.execute("CREATE TABLE IF NOT EXISTS _migrations "
                "(id INTEGER PRIMARY KEY, name VARCHAR, applied TIMESTAMP DEFAULT current_timestamp)")
    return int(con.execute("SELECT coalesce(max(id), 0) FROM _migrations").fetchone()[0])


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Apply every migration newer than the store's version, each in its own transaction."""
    version = current_version(con)
    for number, name, sql in available():
        if number <= version:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(sql)
            con.execute("INSERT INTO _migrations (id, name) VALUES (?, ?)", [number, name])
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        version = number
    return version
