"""The Heads page in headless Chromium: heatmap screenshot, and a click on a heatmap cell opens that head.

Same setup as tests/browser/test_ui_browser.py (Debian chromium + playwright); screenshots land in
tests/artifacts/ (gitignored).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import serve_ui

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _add_head_scan(ws: Path) -> None:
    import torch

    from analysis.heads.run import save_scan
    from analysis.heads.scan import HeadScanConfig, scan_heads
    from sae.models import load_model
    from store import session
    from store.corpora import context_tokens
    from tests.ui_store import CORPUS, MODEL

    model = load_model(MODEL, device="cpu")
    with session(ws / "sparsescope.duckdb") as con:
        ids = torch.tensor(context_tokens(con, CORPUS, 0, 12))
        scan = scan_heads(model, ids, list(range(12)), HeadScanConfig(random_seqs=2, random_half=8), progress=False)
        save_scan(con, scan, CORPUS)


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium binary (apt-get install chromium)")
    ws = tmp_path_factory.mktemp("heads-browser") / "ws"
    subprocess.run([sys.executable, "-m", "tests.ui_store", str(ws)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    _add_head_scan(ws)
    with serve_ui(ws, timeout_s=120) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        yield url, page
        browser.close()


def test_heatmap_screenshot_and_click_opens_a_head(page_url):
    url, page = page_url
    page.goto(f"{url}/heads?layer=0&head=0&score=prev_token")
    page.get_by_role("heading", name="Head 0.0").wait_for(timeout=180_000)
    grid = page.locator(".js-plotly-plot").first
    grid.wait_for(timeout=60_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "heads.png"), full_page=True)
    # tiny-random: 2 layers (rows, layer 0 on top) x 4 heads (columns); click the cell of layer 1, head 3
    box = grid.locator(".nsewdrag").first.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 7 / 8, box["y"] + box["height"] * 3 / 4)
    page.get_by_role("heading", name="Head 1.3").wait_for(timeout=120_000)
    assert "layer=1" in page.url and "head=3" in page.url
    page.screenshot(path=str(ARTIFACTS / "heads-clicked.png"), full_page=True)
