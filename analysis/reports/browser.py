"""Headless Chromium for what only a browser can do offline: PNG figures (via kaleido) and PDF printing.

The browser is found at $SPARSESCOPE_CHROMIUM, then $BROWSER_PATH (kaleido's own variable), then on PATH.
Every launch disables the network-touching background services so nothing leaves the machine.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from store.errors import InputError

_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
OFFLINE_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
                 "--disable-default-apps", "--mute-audio")
"""--no-sandbox: Chromium refuses to start as root (containers, CI) with its sandbox on."""


def find_browser() -> str | None:
    """Path of a Chrome/Chromium executable, or None."""
    for var in ("SPARSESCOPE_CHROMIUM", "BROWSER_PATH"):
        path = os.environ.get(var)
        if path and os.access(path, os.X_OK):
            return path
    return next((found for name in _NAMES if (found := shutil.which(name))), None)


def require_browser(what: str) -> str:
    path = find_browser()
    if path is None:
        raise InputError(f"{what} needs Chromium (apt-get install chromium) — use --format html")
    return path


def figures_to_png(figures: dict[Path, dict], width: int = 760, height: int | None = None) -> None:
    """Write each figure dict to its PNG path with kaleido, in one browser session (start-up costs seconds).

    MathJax is switched off: kaleido would otherwise fetch it from a CDN, and no report figure needs it.
    """
    if not figures:
        return
    browser = require_browser("PNG figures")
    try:
        import kaleido
    except ImportError:
        raise InputError("PNG figures need kaleido (pip install kaleido) — use --format html") from None
    jobs = [{"fig": fig, "path": str(path),
             "opts": {"format": "png", "width": width, "height": height or fig["layout"].get("height", 300)}}
            for path, fig in figures.items()]
    errors = kaleido.write_fig_from_object_sync(jobs, kopts={"path": browser, "mathjax": False})
    if errors:
        raise RuntimeError(f"kaleido could not render {len(errors)} figure(s): {errors[0]}")


def html_to_pdf(html: str, out: Path, budget_ms: int = 60_000) -> None:
    """Print an HTML document to `out` as PDF with headless Chromium.

    --virtual-time-budget lets the page's scripts (plotly drawing every figure) finish before printing; the
    page is self-contained, so the network stays unused.
    """
    browser = require_browser("PDF")
    with tempfile.TemporaryDirectory(prefix="sparsescope-pdf-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html, encoding="utf-8")
        cmd = [browser, *OFFLINE_FLAGS, f"--user-data-dir={tmp}/profile", "--no-pdf-header-footer",
               f"--virtual-time-budget={budget_ms}", f"--print-to-pdf={out}", page.as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        tail = (done.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"Chromium could not print the PDF: {tail[0]}")
