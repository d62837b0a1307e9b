"""Fixtures of the browser tests: headless Chromium (the Debian binary; Playwright's own download is not used), and
the workbench workspace: the demo-sized store of tests/ui_store.py grown by the real CLI on the tiny model (a head
scan, an analysed attention-output dictionary, an activation cache to train on), served by `sparsescope ui`."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import cli_workspace, serve_ui
from tests.ui_store import CORPUS, CTX, HOOK, MODEL, N_CONTEXTS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ATTN_DICT = "attn-demo"
ATTN_HOOK = "blocks.1.attn.hook_z"
CACHE = f"{MODEL}__{HOOK}__builtin"
"""The activation cache the Jobs page trains on (`activations` names it MODEL__HOOK__CORPUS)."""
WORKBENCH_CLI = (
    ("heads", "--model", MODEL, "--corpus", CORPUS, "--tokens", "1024"),
    ("train", "--arch", "topk", "--model", MODEL, "--hook", ATTN_HOOK, "--corpus", CORPUS, "--tokens", "2048",
     "--batch", "256", "--d-sae", "32", "--k", "4", "--name", ATTN_DICT, "--device", "cpu"),
    ("analyze", ATTN_DICT, "--corpus", CORPUS, "--tokens", str(N_CONTEXTS * CTX), "--examples", "4",
     "--quantiles", "2", "--device", "cpu"),
    ("activations", "--model", MODEL, "--hook", HOOK, "--corpus", "builtin", "--tokens", "100000", "--device", "cpu"),
)
"""What the CLI adds to the demo workspace, in order."""


@pytest.fixture(scope="module")  # not longer: tests/unit/ui/test_heads_server.py starts Playwright of its own
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium binary (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass(frozen=True)
class Workbench:
    url: str
    ws: Path
    attn_feature: int
    """A feature of ATTN_DICT with the most top examples."""
    attn_dict: str = ATTN_DICT
    """The analysed attention-output (hook_z) dictionary."""
    cache: str = CACHE
    """The activation cache to train on."""


def _busiest_feature(ws: Path, dictionary: str) -> int:
    from store import session

    with session(ws / "sparsescope.duckdb", read_only=True) as con:
        return con.execute("SELECT feature FROM feature_examples WHERE dictionary = ? AND kind = 'top' "
                           "GROUP BY feature ORDER BY count(*) DESC, feature LIMIT 1", [dictionary]).fetchone()[0]


@pytest.fixture(scope="module")
def workbench(tmp_path_factory, browser):
    """The demo workspace plus WORKBENCH_CLI, served."""
    ws = cli_workspace(tmp_path_factory, "workbench", WORKBENCH_CLI)
    try:
        with serve_ui(ws) as url:
            yield Workbench(url, ws, _busiest_feature(ws, ATTN_DICT))
    finally:
        _cancel_jobs(ws)


def _cancel_jobs(ws: Path) -> None:
    """Cancel the jobs a failed test left running: a job outlives the UI by design (SIGTERM to its wrapper)."""
    import duckdb

    from store import jobs as repo
    from store import session

    try:
        with session(ws / "sparsescope.duckdb", read_only=True) as con:
            pids = [job.pid for job in repo.list_jobs(con) if job.active and job.pid]
    except duckdb.IOException:  # a wrapper is writing its outcome: its job is ending
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


@pytest.fixture(scope="module")
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.set_default_timeout(60_000)
    yield page
    page.close()
