"""store.db.connect: waits out another writer instead of failing; refuses what is not (or too new for) a store."""
import subprocess
import sys
import time

import pytest

from store import connect
from store.errors import InputError
from store.migrations import latest_version
from tests.helpers import error_line, run_cli

# holds the write lock for a while, then lets go
HOLD = ("import sys, time; from store import connect; c = connect(sys.argv[1]); print('held', flush=True); "
        "time.sleep(float(sys.argv[2])); c.close()")


def test_a_writer_waits_for_another_process_instead_of_failing(tmp_path, capfd):
    db = str(tmp_path / "s.duckdb")
    connect(db).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, db, "3"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        con = connect(db)  # the default: as long as it takes
        waited = time.monotonic() - start
        con.execute("CREATE TABLE after_wait (x INTEGER)")
        con.close()
    finally:
        holder.wait(timeout=30)
    assert waited > 1.0  # it really was blocked, and got through once the other process let go
    assert "another process is writing" in capfd.readouterr().err


def test_a_bounded_wait_still_fails_on_a_held_lock(tmp_path):
    import duckdb

    db = str(tmp_path / "s.duckdb")
    connect(db).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, db, "4"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(duckdb.IOException):
            connect(db, wait_s=0.3)  # the UI's way: a short wait, then "busy"
    finally:
        holder.wait(timeout=30)


def test_a_store_from_a_newer_schema_is_refused(tmp_path):
    db = tmp_path / "new.duckdb"
    con = connect(db)
    con.execute("INSERT INTO _migrations (id, name) VALUES (?, 'from_the_future')", [latest_version() + 1])
    con.close()
    for read_only in (False, True):
        with pytest.raises(InputError, match="newer SparseScope"):
            connect(db, read_only=read_only)


def test_cli_refuses_a_file_that_is_not_a_store(tmp_path, monkeypatch, capsys):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "sparsescope.duckdb").write_bytes(b"this is not a database" * 100)
    before = (ws / "sparsescope.duckdb").read_bytes()
    code, _, err = run_cli(monkeypatch, capsys, "dicts", "--workspace", str(ws))
    assert code == 2 and "not a DuckDB database file" in error_line(err)
    assert (ws / "sparsescope.duckdb").read_bytes() == before


def test_cli_refuses_a_newer_store(tmp_path, monkeypatch, capsys):
    ws = tmp_path / "ws"
    ws.mkdir()
    con = connect(ws / "sparsescope.duckdb")
    con.execute("INSERT INTO _migrations (id, name) VALUES (?, 'from_the_future')", [latest_version() + 1])
    con.close()
    code, _, err = run_cli(monkeypatch, capsys, "dicts", "--workspace", str(ws))
    assert code == 2 and "newer SparseScope" in error_line(err)
