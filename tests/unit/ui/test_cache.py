"""The UI while another process writes the store: last results and one info line, never a lock error."""
import subprocess
import sys
import textwrap

import pytest

from app.ui.data import cache
from tests.ui_store import open_page, texts

JOB = textwrap.dedent("""
    import sys
    from store import connect
    from store.queries import set_label
    sys.stdin.readline()  # wait for the test to say go
    con = connect(sys.argv[1])
    set_label(con, "topk-demo", 5, "written by a job", "")  # committed, but the job keeps the store open
    print("ready", flush=True)
    sys.stdin.read()
    con.close()
""")


@pytest.fixture
def job(ui_ws):
    """A process holding the store's write lock until the test closes its stdin."""
    proc = subprocess.Popen([sys.executable, "-c", JOB, str(ui_ws / "sparsescope.duckdb")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)

    def start():
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ready"

    def finish():
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0

    yield start, finish
    if proc.poll() is None:
        proc.kill()


def test_pages_keep_working_while_a_job_writes(ui_ws, job, monkeypatch):
    monkeypatch.setattr(cache, "READ_WAIT_S", 0.2)
    monkeypatch.setattr(cache, "WRITE_WAIT_S", 0.2)
    start, finish = job
    feature = open_page("views/feature.py", dict="topk-demo", feature=5)
    assert not feature.exception and "written by a job" not in texts(feature)
    start()
    # the store changed, so the page reads again, finds it locked and shows what it read last
    feature.run()
    assert not feature.exception and not feature.error
    assert [i.value for i in feature.info] == [cache.BUSY] and "feature #5" in texts(feature)
    # a page never read before has nothing to show but the same line
    other = open_page("views/feature.py", dict="topk-demo", feature=6)
    assert not other.exception and not other.error and cache.BUSY in [i.value for i in other.info]
    # a label edit waits briefly, then keeps the edit and says why it is not saved
    feature.text_input[0].set_value("mine")
    feature.button[0].click().run()
    assert not feature.exception and not feature.error
    assert "label is not saved yet" in feature.warning[0].value
    finish()
    feature.run()
    assert not feature.exception and not feature.info and "written by a job" in texts(feature)


def test_a_busy_store_at_start_is_not_an_error(ui_ws, job, monkeypatch):
    monkeypatch.setattr(cache, "READ_WAIT_S", 0.2)
    start, finish = job
    start()
    at = open_page()
    assert not at.exception and not at.error and [i.value for i in at.info] == [cache.BUSY]
    finish()
    at.run()
    assert not at.exception and not at.info and at.dataframe


def test_the_version_changes_when_a_process_commits(ui_ws):
    from store import session
    from store.queries import set_label

    db = str(ui_ws / "sparsescope.duckdb")
    before = cache.version(db)
    assert cache.version(db) == before
    with session(db) as con:
        set_label(con, "mp-demo", 1, "x")
    assert cache.version(db) != before
