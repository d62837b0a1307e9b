"""Home page: the workspace at a glance, and a friendly message on an empty workspace."""
from tests.ui_store import DICTIONARIES, open_page, texts, ui_ws  # noqa: F401  (ui_ws is a fixture)


def test_home_lists_every_dictionary_with_metrics_and_the_fvu_chart(ui_ws):
    at = open_page()
    assert not at.exception and not at.error
    assert [m.value for m in at.metric] == ["1", "1", "3", "3"]
    table = at.dataframe[0].value
    assert sorted(table["name"]) == sorted(p.name for p in DICTIONARIES)
    assert table["FVU"].notna().all() and table["CE recovered"].notna().all()
    assert at.get("plotly_chart"), "FVU against L0 chart"
    assert "Browse features" in texts(at)


def test_an_empty_workspace_says_which_command_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSESCOPE_WORKSPACE", str(tmp_path / "nothing-here"))
    at = open_page()
    assert not at.exception and not at.error
    assert "sparsescope demo" in at.info[0].value


def test_a_store_without_dictionaries_is_not_an_error(tmp_path, monkeypatch):
    from store import Workspace, session

    ws = Workspace.resolve(tmp_path / "ws")
    with session(ws.db_path):
        pass  # migrated, empty
    monkeypatch.setenv("SPARSESCOPE_WORKSPACE", str(ws.root))
    at = open_page()
    assert not at.exception and not at.error and "sparsescope demo" in at.info[0].value
