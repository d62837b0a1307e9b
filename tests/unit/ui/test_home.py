"""Home page: the workspace at a glance, and a friendly message on an empty workspace."""
import json

import pytest

from tests.ui_store import DICTIONARIES, open_page, texts

CHART_TAB = "FVU against L0"


def test_home_lists_every_dictionary_with_metrics_and_the_fvu_chart(ui_ws):
    at = open_page()
    assert not at.exception and not at.error
    assert [m.value for m in at.metric] == ["1", "1", "3", "3"]
    table = at.dataframe[0].value
    assert sorted(table["name"]) == sorted(p.name for p in DICTIONARIES)
    assert table["FVU"].notna().all() and table["CE recovered"].notna().all()
    assert [t.label for t in at.tabs] == ["Table", CHART_TAB]
    assert not at.get("plotly_chart"), "the chart is drawn only on its tab"
    assert "Browse features" in texts(at)


def test_the_chart_tab_draws_fvu_against_l0_with_ce_recovered_on_hover(ui_ws):
    at = open_page(view=CHART_TAB)  # the tab is bound to ?view=, so it deep-links too
    assert not at.exception and not at.error
    (chart,) = at.get("plotly_chart")
    figure = json.loads(chart.proto.spec)
    assert sorted(t["name"] for t in figure["data"]) == sorted({p.arch for p in DICTIONARIES})  # a colour per arch
    assert sorted(n for t in figure["data"] for n in t["text"]) == sorted(p.name for p in DICTIONARIES)
    assert all("CE recovered" in t["hovertemplate"] for t in figure["data"])


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


def test_usage_and_pursuit_columns_come_from_the_analysis_counts(ui_ws):
    import numpy as np

    from store import connect

    at = open_page()
    assert not at.exception and not at.error
    table = at.dataframe[0].value.set_index("name")
    con = connect(ui_ws / "sparsescope.duckdb", read_only=True)
    for plan in DICTIONARIES:
        counts = np.array([c for (c,) in con.execute("SELECT count FROM features WHERE dictionary = ?",
                                                     [plan.name]).fetchall()], dtype=float)
        p = counts[counts > 0] / counts.sum()
        assert table.loc[plan.name, "used"] == pytest.approx((counts > 0).mean())
        assert table.loc[plan.name, "perplexity"] == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    chosen, = con.execute("SELECT sum(count) FROM mp_steps WHERE dictionary = 'mp-demo'").fetchone()
    n_tokens, = con.execute("SELECT n_tokens FROM analyses WHERE dictionary = 'mp-demo'").fetchone()
    stops = dict(con.execute("SELECT metric, value FROM dictionary_metrics WHERE dictionary = 'mp-demo' "
                             "AND metric LIKE 'mp_stop_%' AND value > 0").fetchall())
    con.close()
    assert table.loc["mp-demo", "MP steps"] == pytest.approx(chosen / n_tokens)
    assert stops and all(f"{k.removeprefix('mp_stop_')} {v:.0%}" in table.loc["mp-demo", "MP stops"]
                         for k, v in stops.items())
    for other in ("topk-demo", "codebook-demo"):  # no pursuit: the columns stay empty
        assert table[["MP steps", "MP stops"]].loc[other].isna().all()


def test_the_usage_columns_add_no_query_to_the_first_view(ui_ws, monkeypatch):
    """Home reads everything it shows in one cached overview read (one cursor of the shared reader)."""
    from app.ui.data import readers

    opened = []
    real = readers.READERS.cursor

    def counting(*args, **kwargs):
        opened.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(readers.READERS, "cursor", counting)
    at = open_page()
    assert not at.exception and len(opened) == 1
