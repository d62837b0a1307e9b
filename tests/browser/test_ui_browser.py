"""The web UI in headless Chromium: `sparsescope ui` on the demo-sized test store, pages as a user sees them.

Needs the Debian chromium binary (apt-get install chromium) and the playwright package (the `browser` fixture of
conftest.py). Screenshots land in tests/artifacts/ (gitignored).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import screenshot, serve_ui, settled

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
FIRST_VIEW_TARGET_S = 3.0


@pytest.fixture(scope="module")
def server(tmp_path_factory, browser):
    """Build the test store (as `python -m tests.ui_store` would), serve it, open Home once, time it."""
    ws = tmp_path_factory.mktemp("browser") / "ws"
    subprocess.run([sys.executable, "-m", "tests.ui_store", str(ws)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    page = browser.new_page(viewport={"width": 1400, "height": 2200})
    started = time.monotonic()
    try:
        with serve_ui(ws) as url:
            up = time.monotonic()
            page.goto(url)
            page.get_by_role("heading", name="SparseScope").wait_for(timeout=120_000)
            page.get_by_test_id("stDataFrame").first.wait_for(timeout=120_000)
            first_view = time.monotonic()
            print(f"\nfirst view: server up {up - started:.2f} s after `sparsescope ui` started; Home with its "
                  f"dictionary table {first_view - up:.2f} s after that (target {FIRST_VIEW_TARGET_S} s; "
                  f"bench/ui_first_view.py compares it with a bare Streamlit page); load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
            yield url, page, first_view - up, ws
    finally:
        page.close()


def test_home_shows_the_workspace(server):
    url, page, first_view_s, _ = server
    settled(page)
    assert page.get_by_test_id("stMetricValue").first.inner_text() == "1"
    assert page.locator(".js-plotly-plot").count() == 0  # the chart waits on its own tab
    screenshot(page, "home")
    page.get_by_role("tab", name="FVU against L0").click()
    page.locator(".js-plotly-plot text", has_text="codebook-demo").wait_for(timeout=60_000)
    settled(page)
    assert page.locator(".js-plotly-plot").count() == 1
    for name in ("topk-demo", "mp-demo", "codebook-demo"):  # the table is a canvas: read the chart's labels
        assert page.locator(".js-plotly-plot text", has_text=name).is_visible()
    assert "view=" in page.url  # the open tab is in the URL, so a link opens the chart
    screenshot(page, "home-chart")
    assert first_view_s < 60  # printed above; the 3 s target is reported, not asserted, on a shared machine


def test_feature_page_deep_link(server):
    url, page, _, _ = server
    page.goto(f"{url}/feature?dict=mp-demo&feature=2")
    page.get_by_text("Top activating contexts").wait_for(timeout=120_000)
    settled(page)
    # st.html renders a moment after the elements around it: wait for it rather than check at once
    page.locator("h2", has_text="feature #2").filter(has_text="pursuit atom").wait_for(timeout=60_000)
    tokens = page.locator("span.tok")
    tokens.nth(20).wait_for(timeout=60_000)
    page.get_by_test_id("stPageLink").first.wait_for(timeout=60_000)  # neighbour links
    hot = page.locator("span.tok[style*='outline']").first
    assert float(hot.get_attribute("title")) > 0  # hovering the firing token shows its activation
    page.get_by_text("Matching pursuit").wait_for(timeout=60_000)  # below the blocks drawn after the examples
    screenshot(page, "feature")


def test_bad_feature_id_is_one_error_line(server):
    url, page, _, _ = server
    page.goto(f"{url}/feature?dict=mp-demo&feature=abc")
    page.get_by_text("feature must be a whole number").wait_for(timeout=60_000)
    assert page.locator("[data-testid='stException']").count() == 0
    screenshot(page, "feature-bad-id")


def test_prompt_inspector_highlights_tokens(server):
    url, page, _, _ = server
    page.goto(f"{url}/inspector")
    page.get_by_text("Features on token").wait_for(timeout=120_000)
    settled(page)
    tokens = page.locator("span.tok")
    tokens.nth(20).wait_for(timeout=60_000)
    assert tokens.nth(5).get_attribute("title").startswith("#")
    page.get_by_text("5: q", exact=True).wait_for(timeout=60_000)  # the token pills
    page.get_by_test_id("stPageLink").first.wait_for(timeout=60_000)  # features of the picked token
    assert page.get_by_text("codebook-demo", exact=True).first.is_visible()
    screenshot(page, "inspector")


def test_browser_and_compare_pages(server):
    url, page, _, _ = server
    page.goto(f"{url}/browser?dict=topk-demo")
    page.get_by_text("select a row to open it").wait_for(timeout=60_000)
    settled(page)
    screenshot(page, "browser")
    page.goto(f"{url}/compare?a=topk-demo&b=mp-demo")
    page.get_by_text("features of topk-demo").wait_for(timeout=120_000)  # after the matching
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    settled(page)
    assert page.get_by_test_id("stMetricValue").first.inner_text() == "hungarian"
    screenshot(page, "compare")


HOSTILE_PARAM = ("![x](http://evil.example/p.png) [login](https://evil.example) <img src=x> **b** _i_ $x^2$ "
                 ":smile: :material/home: :red[red] www.evil.example me@evil.example a:b 10:30")


def test_a_hostile_query_parameter_is_shown_as_text(server):
    """Streamlit's own renderer (not a model of it): no image, no link, no icon, the characters as typed."""
    from urllib.parse import quote

    url, page, _, _ = server
    for path in ("browser?dict=", "steering?dict=", "compare?a="):
        page.goto(f"{url}/{path}{quote(HOSTILE_PARAM)}")
        alert = page.get_by_test_id("stAlert")
        alert.first.wait_for(timeout=120_000)
        settled(page)
        assert alert.count() == 1 and page.locator("[data-testid='stException']").count() == 0
        shown = alert.first.inner_text().replace("\u2060", "")
        assert HOSTILE_PARAM in shown, shown
        assert page.locator("img[src*='evil'], a[href*='evil'], a[href^='mailto']").count() == 0
        assert alert.first.locator("img, a, strong, em, code, .katex, [data-testid='stIconMaterial']").count() == 0
    screenshot(page, "hostile-param")


def test_pages_keep_serving_while_a_long_job_runs(server):
    """An activation cache of 400k tokens is built beside the running UI: a feature page renders while the job
    runs, and the job finishes with exit 0 and its cache in the store (jobs hold the store only briefly)."""
    from store import session

    url, page, _, ws = server
    job = subprocess.Popen([sys.executable, "-m", "app.cli", "activations", "--model", "tiny-random", "--hook",
                            "blocks.0.hook_resid_post", "--corpus", "builtin", "--tokens", "400000", "-w", str(ws)],
                           cwd=ROOT, env=os.environ | {"SPARSESCOPE_QUIET": "1", "PYTHONPATH": str(ROOT)},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while job.poll() is None and time.monotonic() < deadline and \
                not any((ws / "activations").glob("*builtin*/shard_*.safetensors")):
            time.sleep(0.2)  # until the job runs the model (its first shard is on disk)
        assert job.poll() is None, job.communicate()
        page.goto(f"{url}/feature?dict=mp-demo&feature=2")
        page.get_by_text("Top activating contexts").wait_for(timeout=120_000)
        page.locator("h2", has_text="feature #2").filter(has_text="pursuit atom").wait_for(timeout=120_000)
        served_during_job = job.poll() is None
        screenshot(page, "feature-during-job")
        _, err = job.communicate(timeout=900)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, err
    assert served_during_job  # the page was read while the job was still writing its cache
    with session(ws / "sparsescope.duckdb", read_only=True) as con:
        rows = con.execute("SELECT n_tokens, complete FROM activation_caches WHERE corpus = 'builtin'").fetchall()
    assert rows and rows[0][1] and rows[0][0] >= 400_000 * 0.9
