"""Fixtures of the UI tests: the demo workspace of tests/ui_store.py, the same with a head scan, and the same with
an analysed attention-output (hook_z) dictionary."""
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


ATTN_DICT = "attn-demo"
"""A hook_z (attention-output) dictionary that `attn_ws` adds to the demo workspace and analyses."""
ATTN_HOOK = "blocks.1.attn.hook_z"


@pytest.fixture(scope="session")
def _attn_root(tmp_path_factory):
    """The demo workspace plus ATTN_DICT, analysed by the real `analyze` pass on the demo corpus (built once)."""
    from analysis.features.analyze import AnalyzeRequest, analyze_dictionary
    from sae.dictionaries import build_training_sae, save_dictionary
    from sae.models import load_model
    from store import Workspace, session
    from store.dictionaries import DictionaryRow, add_dictionary
    from tests.factories import dict_spec
    from tests.ui_store import CTX, N_CONTEXTS

    root = demo_workspace(tmp_path_factory.mktemp("attn") / "ws")
    ws = Workspace.resolve(root)
    model = load_model(MODEL, device="cpu")
    d_in = model.cfg.n_heads * model.cfg.d_head
    torch.manual_seed(1)
    sae = build_training_sae(dict_spec("topk", d_in=d_in, d_sae=32, k=4, hook_name=ATTN_HOOK, model_name=MODEL))
    with torch.no_grad():
        for param in sae.parameters():  # non-zero b_enc and b_dec: DFA must add its bias terms to match
            param.add_(torch.randn_like(param) * 0.1)
    folder = ws.dictionaries_dir / ATTN_DICT
    save_dictionary(sae, folder)
    with session(ws.db_path) as con:
        add_dictionary(con, DictionaryRow(ATTN_DICT, MODEL, ATTN_HOOK, "topk", d_in, 32, 4, str(folder)))
    analyze_dictionary(ws, AnalyzeRequest(ATTN_DICT, corpus=CORPUS, tokens=N_CONTEXTS * CTX, examples=4, quantiles=2),
                       lm=model, progress=False)
    return root


@pytest.fixture
def attn_ws(_attn_root, tmp_path, monkeypatch):
    """A fresh copy of the demo workspace with the analysed hook_z dictionary ATTN_DICT."""
    import shutil

    root = shutil.copytree(_attn_root, tmp_path / "attn-ws")
    monkeypatch.setenv("SPARSESCOPE_WORKSPACE", str(root))
    return root


@pytest.fixture
def explained_ws(ui_ws):
    """The demo workspace with every live feature of topk-demo explained by `patterns` and scored by detection and
    simulation (the real `sparsescope explain` run)."""
    from analysis.explain import ExplainRequest, run_explain

    run_explain(ui_ws / "sparsescope.duckdb", ExplainRequest("topk-demo"), progress=False)
    return ui_ws
