"""The UI's read pool: one shared read-only instance, let go when idle or held too long, and around writes."""
import subprocess
import sys
import threading
import time

import duckdb
import pytest

from app.ui.data.readers import Readers
from store import connect

WRITE = ("import sys; from store import connect; c = connect(sys.argv[1], wait_s=float(sys.argv[2])); "
         "c.execute(\"INSERT INTO models (name, n_layers, d_model) VALUES (sys.argv[3], 1, 1)\".replace("
         "'sys.argv[3]', repr(sys.argv[3]))); c.close()")


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "s.duckdb"
    connect(path).close()
    return str(path)


def other_process_writes(db: str, wait_s: float, name: str) -> bool:
    out = subprocess.run([sys.executable, "-c", WRITE, db, str(wait_s), name], capture_output=True, text=True)
    if out.returncode:
        print(out.stderr[-1500:])  # shown by pytest when the test fails
    return out.returncode == 0


def test_reads_share_one_instance_and_let_it_go_when_idle(db):
    pool = Readers(idle_s=4.0, hold_s=30, gap_s=0.1)  # longer than a python process takes to start
    with pool.cursor(db, 1.0) as con:
        assert con.execute("SELECT count(*) FROM models").fetchone() == (0,)
        first = pool._open[db]
    with pool.cursor(db, 1.0):
        assert pool._open[db] is first
    assert not other_process_writes(db, 0.0, "blocked")  # held: a writer has to wait
    assert other_process_writes(db, 10.0, "later")  # ... and gets in once the pool is idle
    assert db not in pool._open
    with pool.cursor(db, 1.0) as con:  # a new instance sees the write
        assert con.execute("SELECT name FROM models").fetchall() == [("later",)]
    pool.close_all()


def test_continuous_reads_leave_a_window_for_writers(db):
    pool = Readers(idle_s=5.0, hold_s=0.4, gap_s=1.5)
    stop = threading.Event()

    def keep_reading():
        while not stop.is_set():
            with pool.cursor(db, 5.0) as con:
                con.execute("SELECT count(*) FROM models").fetchall()

    readers = [threading.Thread(target=keep_reading) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        started = time.monotonic()
        assert other_process_writes(db, 20.0, "squeezed in")
        assert time.monotonic() - started < 15
    finally:
        stop.set()
        for t in readers:
            t.join()
        pool.close_all()


def test_writing_lets_go_and_holds_reads_back(db):
    pool = Readers(idle_s=30, hold_s=30, gap_s=0.1)
    with pool.cursor(db, 1.0):
        pass
    with pool.writing(db):
        assert db not in pool._open
        con = connect(db, wait_s=1.0)  # same process, read-write: would clash with an open read-only instance
        con.execute("INSERT INTO models (name, n_layers, d_model) VALUES ('mine', 1, 1)")
        con.close()
    with pool.cursor(db, 1.0) as con:
        assert con.execute("SELECT name FROM models").fetchall() == [("mine",)]
    pool.close(db)


def test_a_held_write_lock_is_a_lock_error_after_the_wait(db):
    from store.db import is_lock_error

    proc = subprocess.Popen([sys.executable, "-c", "import sys, duckdb; c = duckdb.connect(sys.argv[1]); "
                             "print('ready', flush=True); sys.stdin.read()", db], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        pool = Readers()
        with pytest.raises((duckdb.IOException, duckdb.ConnectionException)) as info:
            with pool.cursor(db, 0.2):
                pass
        assert is_lock_error(info.value) and not pool._open
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
