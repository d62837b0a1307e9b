"""The first page view after `sparsescope ui` starts, in headless Chromium, against a bare Streamlit page.

    python bench/ui_first_view.py [--quick] [--workspace WS] [--runs 5]

Each run starts a fresh server and a fresh browser context (nothing cached in the browser), waits until the server
answers its health check, then opens the page and times:
- Home on WS (default ./workspace, the store `make demo` builds; without one, the demo-sized test store is built in
  a temporary folder): until the dictionaries table is shown (home_s); then the "FVU against L0" tab is clicked,
  and the time until its plotly chart is drawn is chart_s (plotly's frontend code loads then);
- the reference, a bare Streamlit page (a title, one metric and a two-row table, no store) served by plain
  `streamlit run` on the same machine: until its table is shown (reference_s). Everything a browser does for any
  Streamlit page (loading the frontend, connecting, loading the table's code) is in it, nothing of SparseScope's.

Runs alternate between the two, so both see the same load. Prints one JSON line with medians over the runs:
{"bench": "ui_first_view", "home_s": ..., "chart_s": ..., "reference_s": ..., "ratio": home_s / reference_s,
 "ok": home_s < 3}. Needs the playwright package and a chromium binary (apt-get install chromium).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 3.0
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
REFERENCE_APP = """import pandas as pd
import streamlit as st

st.title("Reference")
st.metric("rows", 2)
st.dataframe(pd.DataFrame({"a": [1, 2], "b": [0.5, 0.25]}))
"""
TABLE = "[data-testid='stDataFrame']"
CHART = ".js-plotly-plot .main-svg"
CHART_TAB = "FVU against L0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(cmd: list[str], port: int) -> tuple[subprocess.Popen, float]:
    """Start a server; returns it once /_stcore/health answers, with the seconds that took."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=os.environ | {"SPARSESCOPE_QUIET": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = started + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the server exited with {proc.returncode}: {' '.join(cmd)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1):
                return proc, time.monotonic() - started
        except OSError:
            time.sleep(0.05)
    _stop(proc)
    raise SystemExit("error: the server did not come up in 120 s")


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _view(browser, url: str, chart_tab: str | None = None) -> tuple[float, float | None]:
    """Open url in a fresh context: seconds until the table is visible; then, given chart_tab, seconds from
    clicking that tab until its chart is drawn."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        start = time.monotonic()
        page.goto(url)
        page.locator(TABLE).first.wait_for(timeout=120_000)
        table = time.monotonic() - start
        if chart_tab is None:
            return table, None
        page.get_by_role("tab", name=chart_tab).click()
        start = time.monotonic()
        page.locator(CHART).first.wait_for(timeout=120_000)
        return table, time.monotonic() - start
    finally:
        context.close()


def _workspace(given: str | None, scratch: Path) -> Path:
    if given:
        ws = Path(given).resolve()
        if not (ws / "sparsescope.duckdb").exists():
            raise SystemExit(f"error: no store in {ws} (run `sparsescope demo` first, or leave out --workspace)")
        return ws
    default = ROOT / "workspace"
    if (default / "sparsescope.duckdb").exists():
        return default
    ws = scratch / "ws"
    subprocess.run([sys.executable, "-m", "tests.ui_store", str(ws)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return ws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", help="workspace to serve (default ./workspace, else the test store)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 runs")
    args = parser.parse_args()
    runs = 2 if args.quick else args.runs
    if runs < 1:
        raise SystemExit("error: --runs must be at least 1")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("error: needs playwright (make setup installs it)") from None
    if not Path(CHROMIUM).exists():
        raise SystemExit("error: needs a chromium binary (apt-get install chromium)")

    with tempfile.TemporaryDirectory(prefix="sparsescope-first-view-") as tmp:
        scratch = Path(tmp)
        ws = _workspace(args.workspace, scratch)
        reference = scratch / "reference.py"
        reference.write_text(REFERENCE_APP)
        home, chart, ref, up, ref_up = [], [], [], [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for _ in range(runs):
                port = _free_port()
                proc, seconds = _serve([sys.executable, "-m", "app.cli", "ui", "--port", str(port), "-w", str(ws)],
                                       port)
                try:
                    h, c = _view(browser, f"http://127.0.0.1:{port}/", CHART_TAB)
                finally:
                    _stop(proc)
                home.append(h)
                chart.append(c)
                up.append(seconds)
                port = _free_port()
                proc, seconds = _serve([sys.executable, "-m", "streamlit", "run", str(reference), "--server.port",
                                        str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
                                        "--server.fileWatcherType", "none"], port)
                try:
                    r, _ = _view(browser, f"http://127.0.0.1:{port}/")
                finally:
                    _stop(proc)
                ref.append(r)
                ref_up.append(seconds)
            browser.close()

    home_s, reference_s = statistics.median(home), statistics.median(ref)
    print(json.dumps({"bench": "ui_first_view", "workspace": str(ws), "runs": runs, "home_s": round(home_s, 2),
                      "chart_s": round(statistics.median(chart), 2), "reference_s": round(reference_s, 2),
                      "ratio": round(home_s / reference_s, 3), "home_runs_s": [round(t, 2) for t in home],
                      "server_up_s": round(statistics.median(up), 2),
                      "reference_server_up_s": round(statistics.median(ref_up), 2),
                      "load": round(os.getloadavg()[0], 2), "ok": bool(home_s < TARGET_S)}))


if __name__ == "__main__":
    main()
