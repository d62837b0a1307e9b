"""Feature reports: what the HTML holds, that it needs no network, escaping, selection, bad input, the CLI."""
from __future__ import annotations

import json
import re

import pytest

from analysis.reports import Selection, check_format, collect_report, render_html, write_report
from analysis.reports import output as output_mod
from analysis.reports.collect import ReportConfig, select_features
from analysis.reports.html import json_for_script
from store import InputError, Workspace, connect, session
from tests.factories import HOSTILE_LABEL, build_report_store
from tests.helpers import run_cli

TEN = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
# A resource reference is markup or CSS that makes a browser fetch: src=, href=, srcset=, url(...), @import.
# plotly.js mentions URLs inside its code (strings in messages and links it never loads); those are not
# references, and the browser test checks separately that nothing is requested at all.
RESOURCE = re.compile(r"""(?:\b(?:src|href|srcset|poster|data|action)\s*=\s*["']?\s*|url\(\s*["']?|@import\s+["']?)"""
                      r"""(?:https?:)?//""", re.IGNORECASE)


@pytest.fixture(scope="module")
def store():
    con = connect(":memory:")
    build_report_store(con, n_features=48)
    yield con
    con.close()


@pytest.fixture(scope="module")
def html(store):
    return render_html(collect_report(store, "topk-demo", Selection(features=TEN), heads=True))


def test_html_has_no_network_resource_reference(html):
    from plotly.offline import get_plotlyjs

    start = html.index("<script>") + len("<script>")
    inlined = html[start:html.index("</script>", start)]
    assert inlined == get_plotlyjs()  # the bundle as shipped: its URL strings are code, not markup we wrote
    ours = html[:start] + html[start + len(inlined):]
    assert not RESOURCE.search(ours)
    assert "<link" not in ours and "<img" not in html and "@font-face" not in html
    assert html.count("<script>") == 2  # plotly.js once, then the small drawing script
    assert '<script type="application/json" id="report-figures">' in html


def test_resource_pattern_catches_what_it_should():
    for bad in ('<script src="https://cdn.plot.ly/x.js">', "<link href='//fonts.example/x.css'>",
                "background:url(http://x/y.png)", '@import "https://x/y.css"', '<img src=http://x/y.png>'):
        assert RESOURCE.search(bad), bad
    assert not RESOURCE.search('var u = "https://plot.ly"; <a href="#f-3">')


def test_html_sections_and_plots(html, store):
    for feature in TEN:
        assert f'<section class="card" id="f-{feature}">' in html
        assert f'href="#f-{feature}"' in html  # table of contents
    for section in ('id="toc"', 'id="summary"', 'id="heads"', "Top activations", "Samples across activation bands",
                    "Promoted tokens", "Decoder neighbours", "Co-occurring features"):
        assert section in html
    figures = json.loads(html.split('id="report-figures">')[1].split("</script>")[0])
    live = [f for f in TEN if store.execute("SELECT count FROM features WHERE dictionary = 'topk-demo' "
                                            "AND feature = ?", [f]).fetchone()[0] > 0]
    assert len(figures) == 1 + 3 + len(live)  # FVU-vs-L0, three head scores, a histogram per live feature
    assert all(f'<div class="plot" id="{f["id"]}"></div>' in html for f in figures)


def test_labels_and_tokens_are_escaped(html):
    assert HOSTILE_LABEL not in html and "<script>alert" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in html
    assert "&lt;b&gt;bold?&lt;/b&gt;" in html and " &lt;b&gt;" in html  # notes, and the ' <b>' token
    assert "&amp;amp;" in html  # the ' &amp;' token shows literally
    assert json_for_script({"t": "</script><b>"}) == '{"t":"\\u003c/script>\\u003cb>"}'


def test_neighbours_link_inside_the_report_only(store):
    report = collect_report(store, "topk-demo", Selection(features=(3, 4)))
    html = render_html(report)
    card3 = html.split('id="f-3"')[1].split("</section>")[0]
    assert '<a href="#f-4">#4</a>' in card3  # neighbour 3 -> 4 is in the report
    assert "<span>#5</span>" in card3 and 'href="#f-5"' not in html


def test_token_highlighting_shades_by_activation(html):
    marks = re.findall(r'<mark( class="pk")? style="--a:([0-9.]+)" title="([^"]+)">', html)
    assert marks and any(cls for cls, _, _ in marks)
    assert all(0 <= float(a) <= 1 for _, a, _ in marks)


def test_codebook_and_mp_extras(store):
    mp = render_html(collect_report(store, "mp-demo", Selection(features=(1, 2))))
    assert "Likely parents" in mp and "plot-f1-mp_steps" in mp
    code = render_html(collect_report(store, "codebook-demo", Selection(features=(1,))))
    assert "code usage" in code
    attn = render_html(collect_report(store, "attn-demo", Selection(features=(1,))))
    assert "plot-f1-heads" in attn


def test_selection_orders_and_limits(store):
    by_density = select_features(store, "topk-demo", Selection(top=5, by="density"))
    densities = [store.execute("SELECT density FROM features WHERE dictionary = 'topk-demo' AND feature = ?",
                               [f]).fetchone()[0] for f in by_density]
    assert densities == sorted(densities, reverse=True) and len(by_density) == 5
    assert select_features(store, "topk-demo", Selection(top=10, by="label")) == [2, 1, 5]  # "<script..." sorts first
    with pytest.raises(InputError, match="between 1 and 3"):
        select_features(store, "topk-demo", Selection(top=4), ReportConfig(max_features=3))
    with pytest.raises(InputError, match="no labelled features"):
        select_features(store, "mp-demo", Selection(by="label"))


def test_missing_features_are_listed(store):
    with pytest.raises(InputError, match=r"feature\(s\) not in dictionary 'topk-demo': 48, 1000"):
        collect_report(store, "topk-demo", Selection(features=(1, 48, 1000)))


def test_unanalysed_dictionary_is_named(store):
    store.execute("INSERT INTO dictionaries (name, model, hook, arch, d_in, d_sae, path) "
                  "VALUES ('fresh', 'm', 'h', 'topk', 4, 8, '/x')")
    with pytest.raises(InputError, match="has not been analysed yet"):
        collect_report(store, "fresh")
    with pytest.raises(InputError, match="unknown dictionary 'nope'"):
        collect_report(store, "nope")


def test_bad_output_leaves_nothing_behind(store, tmp_path, monkeypatch):
    report = collect_report(store, "topk-demo", Selection(features=(1,)))
    with pytest.raises(InputError, match="does not exist"):
        write_report(report, "html", tmp_path / "missing" / "r.html")
    with pytest.raises(InputError, match="unknown report format 'docx'"):
        check_format("docx")
    monkeypatch.setattr(output_mod.os, "access", lambda *a: False)
    with pytest.raises(InputError, match="not writable"):
        write_report(report, "html", tmp_path / "r.html")
    monkeypatch.undo()

    def broken(_report):
        raise RuntimeError("disk full")
    monkeypatch.setattr("analysis.reports.report_to_json", broken)
    with pytest.raises(RuntimeError):
        write_report(report, "json", tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def _workspace(root):
    space = Workspace.resolve(root)
    with session(space.db_path) as con:
        build_report_store(con, n_features=24)
    return space


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Shared by the bad-input tests, which must leave it untouched."""
    return _workspace(tmp_path_factory.mktemp("report-cli") / "ws")


@pytest.mark.parametrize("args, needle", [
    (["--features", "1,2,99"], "feature(s) not in dictionary 'topk-demo': 99"),
    (["--features", "1,x"], "comma-separated feature ids"),
    (["--features", "1", "--top", "3"], "either --features or --top"),
    (["--top", "3", "--format", "docx"], "unknown report format 'docx'"),
    (["--top", "3", "--out", "/no/such/folder/r.html"], "output folder /no/such/folder does not exist"),
    (["--top", "3", "--by", "size"], "cannot pick features by 'size'"),
])
def test_cli_bad_input_is_one_line(monkeypatch, capsys, ws, args, needle):
    code, _, err = run_cli(monkeypatch, capsys, "report", "topk-demo", *args, "-w", str(ws.root))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not ws.reports_dir.exists() or not any(ws.reports_dir.iterdir())


def test_cli_writes_html_and_json(monkeypatch, capsys, tmp_path):
    ws = _workspace(tmp_path / "ws")
    code, out, _ = run_cli(monkeypatch, capsys, "report", "topk-demo", "--top", "3", "-w", str(ws.root))
    assert code in (0, None) and "wrote html report of 3 features" in out
    assert (ws.reports_dir / "topk-demo.html").read_text().startswith("<!DOCTYPE html>")
    target = tmp_path / "labels.json"
    code, out, _ = run_cli(monkeypatch, capsys, "report", "topk-demo", "--top", "5", "--by", "label", "--format",
                           "json", "--out", str(target), "-w", str(ws.root))
    assert code in (0, None) and json.loads(target.read_text())["schema"] == "sparsescope-report"
