"""The HTML report in headless Chromium with the network cut off: every plot draws, every section is there.

The acceptance report is 10 features of the shared demo-sized test store (tests/ui_store.py: real tiny-model
activations). The synthetic report store adds what that one lacks (steering runs, head scores, hostile
labels) and serves the two outputs that need the browser: Markdown's PNG figures (kaleido) and the PDF.
Screenshots go to tests/artifacts/ (git-ignored).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from analysis.reports import Selection, collect_report, write_report
from analysis.reports.browser import find_browser
from store import connect, session
from tests.factories import build_report_store

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
LAUNCH_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
FEATURES = (1, 2, 3, 4, 5, 6, 8, 9, 10, 11)


@pytest.fixture(scope="module")
def report():
    if find_browser() is None:
        pytest.skip("needs Chromium (apt-get install chromium)")
    con = connect(":memory:")
    build_report_store(con, n_features=48)
    has_steering = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'steering_runs'").fetchone()[0]
    yield collect_report(con, "topk-demo", Selection(features=FEATURES), steering=["1", "2"] if has_steering else [],
                         heads=True)
    con.close()


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=find_browser(), args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


def open_offline(browser, path: Path):
    """Open a file with every non-file request aborted; returns (page, blocked URLs, page errors)."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    blocked, errors = [], []

    def only_files(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_files)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-plots]", timeout=60_000)
    return page, blocked, errors


def assert_all_plots_drawn(page) -> int:
    n_plots = page.locator("div.plot").count()
    assert page.get_attribute("body", "data-plots") == "done"
    assert page.locator("div.plot:not(.js-plotly-plot)").count() == 0  # plotly took over every placeholder
    assert page.locator("div.plot.js-plotly-plot .main-svg").count() >= n_plots
    assert page.locator("div.plot .main-svg .bars .point, div.plot .main-svg .scatterlayer .point").count() > 0
    return n_plots


def test_ten_features_of_the_test_store_render_offline(browser, tmp_path):
    if find_browser() is None:
        pytest.skip("needs Chromium (apt-get install chromium)")
    from tests.ui_store import demo_workspace  # the UI's demo-sized test store (real tiny-model activations)

    ws = demo_workspace(tmp_path / "ws")
    with session(ws / "sparsescope.duckdb", read_only=True) as con:
        report = collect_report(con, "topk-demo", Selection(top=10, by="density"), heads=True)
    path = write_report(report, "html", tmp_path / "report.html")[0]
    page, blocked, errors = open_offline(browser, path)
    assert not blocked and not errors
    n_plots = assert_all_plots_drawn(page)
    assert n_plots == 1 + sum(bool(f.card.histogram) for f in report.features)  # FVU-vs-L0 + histograms
    ids = [f.card.feature for f in report.features]
    assert len(ids) == 10
    for section in ["#toc", "#summary", *[f"#f-{f}" for f in ids]]:
        assert page.locator(section).is_visible(), section
    for title in ("Top activations", "Samples across activation bands", "Promoted tokens", "Suppressed tokens",
                  "Decoder neighbours", "Co-occurring features"):
        assert page.locator(f"#f-{ids[0]}").get_by_text(title).count() >= 1, title
    assert page.locator(f"#f-{ids[0]} .ex mark").count() > 0  # highlighted tokens
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report_top.png"))
    page.locator(f"#f-{ids[0]}").screenshot(path=str(ARTIFACTS / "report_feature.png"))
    page.close()


def test_steering_heads_and_escaping_render_offline(report, browser, tmp_path):
    path = write_report(report, "html", tmp_path / "report.html")[0]
    page, blocked, errors = open_offline(browser, path)
    assert not blocked and not errors
    assert_all_plots_drawn(page)
    if report.heads is not None:
        assert page.locator("#heads .js-plotly-plot").count() == len(report.heads.scores)
    if report.steering:
        assert page.locator("#f-1 .run").count() == 1 and page.locator("#steering .run").count() == 1
        assert page.locator("#f-1 .run .js-plotly-plot").count() == 1  # KL per position
    assert page.locator("#f-2 h2").inner_text().startswith("Feature 2: <script>")  # shown as text
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#f-1").screenshot(path=str(ARTIFACTS / "report_feature_steering.png"))
    page.close()


def test_markdown_pngs_and_pdf(report, tmp_path):
    md, *pngs = write_report(report, "md", tmp_path / "report.md")
    text = md.read_text()
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert all(f"report_files/{p.name}" in text for p in pngs)
    pdf = write_report(report, "pdf", tmp_path / "report.pdf")[0]
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 50_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "report.pdf", "report_files"]
