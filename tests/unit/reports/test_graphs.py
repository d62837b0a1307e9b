"""Attribution graphs in a report (`sparsescope report DICT --graph ID`): the HTML section with its faithfulness
figures, the plotly figure and the node table linking to feature cards; Markdown; the JSON round trip; bad ids."""
from __future__ import annotations

import json
import re

import pytest

from analysis.reports import Selection, collect_report, render_html, render_markdown, write_report
from analysis.reports.json_io import report_to_dict
from store import InputError, Workspace, connect, session
from tests.attribution_graphs import Column, graph_document, save_document
from tests.factories import build_report_store
from tests.helpers import run_cli

TOKENS = ["<bos>", "T", "h", "e", " ", "c"]
HOOK = "blocks.0.hook_resid_post"


def _documents() -> tuple[dict, dict]:
    """One graph over topk-demo and mp-demo (feature 1 of topk-demo the strongest), one over mp-demo only."""
    both = graph_document("The c", TOKENS, " a", " b", [
        Column("topk-demo", HOOK, 0, [(1, 2, 1.5, 0.9), (5, 4, 0.7, -0.3)], error=0.05),
        Column("mp-demo", HOOK, 0, [(2, 5, 2.0, 0.6)], error=-0.2)], top_n=5)
    other = graph_document("The c", TOKENS, " a", None, [Column("mp-demo", HOOK, 0, [(3, 1, 0.9, 0.5)])])
    return both, other


def _fill(con) -> list[int]:
    build_report_store(con, n_features=24)
    both, other = _documents()
    return [save_document(con, both, recovered=0.72, top_removed=0.41, ablation="mean"),
            save_document(con, other, recovered=None, top_removed=0.1, ablation="zero")]


@pytest.fixture(scope="module")
def store():
    con = connect(":memory:")
    ids = _fill(con)
    yield con, ids
    con.close()


def _figures(html: str) -> list[dict]:
    block = re.search(r'<script type="application/json" id="report-figures">(.*?)</script>', html, re.S).group(1)
    return json.loads(block)


def test_html_graph_section_has_faithfulness_figure_and_linked_nodes(store):
    con, (both, other) = store
    html = render_html(collect_report(con, "topk-demo", Selection(features=(1, 2)), graphs=[str(both), str(other)]))
    section = html[html.index(f'<section id="graph-{both}"'):html.index(f'<section id="graph-{other}"')]
    assert "recovered</th><td class=\"num\">72.0%" in section and "top removed</th><td class=\"num\">41.0%" in section
    assert "faithfulness (mean ablation)" in section and "the graph alone keeps 72%" in section
    assert "removing its top 5 nodes loses 41%" in section and "logit difference" in section
    assert "does not use the report" not in section
    # the node table: strongest first; topk-demo #1 has a card in the report (a link), #5 does not (text)
    rows = re.findall(r"<tr><td>(.*?)</td><td><code>(.*?)</code></td><td class=\"num\">(.*?)</td>", section)
    assert rows[0] == ('<a href="#f-1">topk-demo:1@2</a>', "&#x27;h&#x27;@2", "0.9")
    assert ("topk-demo:5@4", "&#x27; &#x27;@4", "-0.3") in rows
    assert any(r[0] == "mp-demo:error@5" for r in rows)
    # the page's own figure: one trace per link, then the node traces (error nodes as squares)
    (fig,) = [f["fig"] for f in _figures(html) if f["id"] == f"plot-graph-{both}"]
    kinds = {t["name"]: t for t in fig["data"] if t["name"] != "link"}
    assert set(kinds) == {"feature", "error node", "logit"}
    assert kinds["error node"]["marker"]["symbol"] == "square"
    assert sorted(kinds["feature"]["customdata"]) == ["mp-demo:2@5", "topk-demo:1@2", "topk-demo:5@4"]
    assert sum(t["name"] == "link" for t in fig["data"]) == len(_documents()[0]["links"])
    assert f'<a href="#graph-{both}">Attribution graph #{both}</a>' in html
    tail = html[html.index(f'<section id="graph-{other}"'):]
    assert "does not use the report&#x27;s dictionary topk-demo" in tail and "recovered</th><td class=\"num\">–" in tail


def test_markdown_graph_section(store):
    con, (both, _) = store
    report = collect_report(con, "topk-demo", Selection(features=(1,)), graphs=[str(both)])
    text, images = render_markdown(report, "r_files")
    assert f"## Attribution graph #{both}" in text and "| 72.0% | 41.0% | mean |" in text
    assert f"r_files/graph_{both}.png" in images and images[f"r_files/graph_{both}.png"]["data"]
    assert "| [topk-demo:1@2](#f-1) | 'h'@2 | 0.9 | 1.5 | cat and dog |" in text
    text, images = render_markdown(report, "r_files", with_images=False)
    assert not images and "**Strongest nodes**" in text and "graph_" not in text


def test_json_round_trip_holds_the_graph_document(store, tmp_path, monkeypatch, capsys):
    con, (both, other) = store
    report = collect_report(con, "topk-demo", Selection(features=(1, 2)), graphs=[str(other), str(both)])
    path = write_report(report, "json", tmp_path / "r.json")[0]
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(report_to_dict(report)))
    assert [g["id"] for g in data["graphs"]] == [other, both]
    assert data["graphs"][1]["graph"] == _documents()[0] and data["graphs"][1]["recovered"] == 0.72
    assert data["graphs"][0]["recovered"] is None and data["graphs"][0]["ablation"] == "zero"
    space = Workspace.resolve(tmp_path / "other")
    with session(space.db_path) as target:
        build_report_store(target, n_features=24, labels=False)
    code, out, _ = run_cli(monkeypatch, capsys, "import-report", str(path), "-w", str(space.root))
    assert code in (0, None) and "into topk-demo" in out


def test_unknown_graph_is_refused_naming_the_stored_ids(store):
    con, (both, other) = store
    with pytest.raises(InputError, match=rf"unknown attribution graph\(s\): 99, x \(stored: {both}, {other}\)"):
        collect_report(con, "topk-demo", Selection(features=(1,)), graphs=[str(both), "99", "x"])


def test_cli_attaches_graphs_and_refuses_unknown_ones(monkeypatch, capsys, tmp_path):
    space = Workspace.resolve(tmp_path / "ws")
    with session(space.db_path) as con:
        both, other = _fill(con)
    code, _, err = run_cli(monkeypatch, capsys, "report", "topk-demo", "--top", "2", "--graph", str(both),
                           "--graph", "7", "-w", str(space.root))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and lines == [f"error: unknown attribution graph(s): 7 (stored: {both}, {other})"], err
    assert not space.reports_dir.exists() or not any(space.reports_dir.iterdir())
    code, out, _ = run_cli(monkeypatch, capsys, "report", "topk-demo", "--top", "2", "--graph", str(both),
                           "-w", str(space.root))
    assert code in (0, None) and "and 1 attribution graph(s)" in out
    assert f'id="graph-{both}"' in (space.reports_dir / "topk-demo.html").read_text()
