"""Fixtures of the UI tests: the demo workspace of tests/ui_store.py, and the same with a head scan."""
from __future__ import annotations

import pytest
import torch

from tests.ui_store import CORPUS, MODEL, demo_workspace


@pytest.fixture
def ui_ws(tmp_path, monkeypatch):
    """A fresh copy of the demo workspace, which the app under test reads ($SPARSESCOPE_WORKSPACE)."""
    root = demo_workspace(tmp_path / "ws")
    monkeypatch.setenv("SPARSESCOPE_WORKSPACE", str(root))
    return root


@pytest.fixture
def heads_ws(ui_ws):
    """The demo workspace plus a head scan of its corpus."""
    from analysis.heads.run import save_scan
    from analysis.heads.scan import HeadScanConfig, scan_heads
    from sae.models import load_model
    from store import session
    from store.corpora import context_tokens

    model = load_model(MODEL, device="cpu")
    with session(ui_ws / "sparsescope.duckdb") as con:
        ids = torch.tensor(context_tokens(con, CORPUS, 0, 12))
        save_scan(con, scan_heads(model, ids, list(range(12)), HeadScanConfig(batch=6, random_seqs=2, random_half=8),
                                  progress=False), CORPUS)
    return ui_ws


@pytest.fixture
def explained_ws(ui_ws):
    """The demo workspace with every live feature of topk-demo explained by `patterns` and scored by detection and
    simulation (the real `sparsescope explain` run)."""
    from analysis.explain import ExplainRequest, run_explain

    run_explain(ui_ws / "sparsescope.duckdb", ExplainRequest("topk-demo"), progress=False)
    return ui_ws
