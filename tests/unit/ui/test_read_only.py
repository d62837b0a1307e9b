"""A read-only workspace: pages read it as usual; saving a label or a steering run is one error line, no traceback.

`sparsescope ui` finds out at start (tests/unit/cli/test_ui_server.py serves a really read-only folder) and tells
the server with SPARSESCOPE_READ_ONLY=1; a store that turns out unwritable when a write opens it says the same.
"""
import duckdb
import pytest

from app.ui.data import cache
from store.workspace import READ_ONLY_ENV, Workspace
from tests.ui_store import open_page, texts

pytestmark = pytest.mark.usefixtures("one_thread")


def _count(root, table: str) -> int:
    con = duckdb.connect(str(root / "sparsescope.duckdb"), read_only=True)
    try:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


@pytest.fixture
def read_only_ws(ui_ws, monkeypatch):
    monkeypatch.setenv(READ_ONLY_ENV, "1")
    return ui_ws


def test_a_label_edit_is_one_error_line(read_only_ws):
    labels = _count(read_only_ws, "feature_labels")
    at = open_page("views/feature.py", dict="topk-demo", feature=3)
    assert not at.exception and not at.error and "feature #3" in texts(at)  # reading works
    at.text_input[0].set_value("mine")
    at.button[0].click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"{cache.READ_ONLY}; the label is not saved"]
    assert _count(read_only_ws, "feature_labels") == labels


def test_a_steering_run_is_shown_but_not_stored(read_only_ws):
    at = open_page("views/steering.py", dict="topk-demo", feature=3)
    next(t for t in at.toggle if t.label.startswith("chat template")).set_value(False)
    next(s for s in at.slider if s.label.startswith("new tokens")).set_value(3)
    next(b for b in at.button if b.label.startswith("Steer")).click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"{cache.READ_ONLY}; this run is not stored"]
    assert len(at.code) == 4 and any(m.label.startswith("KL") for m in at.metric)  # the run itself is shown
    assert _count(read_only_ws, "steering_runs") == 0


def test_a_store_that_cannot_be_opened_for_writing_is_read_only(ui_ws, monkeypatch):
    """Without the launcher's word (a workspace made read-only after start): the failed open says so."""
    def refuse(*args, **kwargs):
        raise duckdb.IOException(f'IO Error: Cannot open file "{ui_ws}/sparsescope.duckdb": Read-only file system')

    monkeypatch.setattr(cache.store_db, "connect", refuse)
    monkeypatch.setattr(Workspace, "writable", lambda self: False)
    with pytest.raises(cache.ReadOnly):
        cache.save_label("topk-demo", 3, "x", "")
    monkeypatch.setattr(Workspace, "writable", lambda self: True)  # writable, yet failing: not hidden
    with pytest.raises(duckdb.IOException):
        cache.save_label("topk-demo", 3, "x", "")
