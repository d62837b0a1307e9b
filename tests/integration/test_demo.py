"""`sparsescope demo` end to end on the embedded model, at a reduced size (the full demo is `make demo`).

Every stage must leave its results in the workspace, and a second run must reuse them all.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DICTS = ("demo-topk", "demo-mp", "demo-codebook", "demo-topk-l2", "demo-topk-l10", "demo-topk-l14")
TOKENS, HEAD_TOKENS = 16_384, 2_048


def _demo(ws: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "app.cli", "demo", "--tokens", str(TOKENS), "--head-tokens",
                          str(HEAD_TOKENS), "-w", str(ws)], cwd=ROOT, env=os.environ | {"SPARSESCOPE_QUIET": "1",
                                                                                      "COLUMNS": "200"},
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_demo_runs_every_stage_and_reuses_them(tmp_path):
    from store import connect

    ws = tmp_path / "ws"
    first = _demo(ws)
    assert first.count("meets the target") == len(DICTS), first
    assert "stage times:" in first and "demo done" in first
    con = connect(ws / "sparsescope.duckdb", read_only=True)
    try:
        rows = dict(con.execute("SELECT dictionary, n_tokens FROM analyses").fetchall())
        assert set(rows) == set(DICTS)
        assert all(n == TOKENS // 128 * 127 for n in rows.values())  # position 0 of each context left out
        for name in DICTS:
            n_features, alive = con.execute("SELECT count(*), count(*) FILTER (count > 0) FROM features "
                                            "WHERE dictionary = ?", [name]).fetchone()
            assert n_features == 4608 and alive > 1000
            assert con.execute("SELECT count(*) FROM feature_logits WHERE dictionary = ?", [name]).fetchone()[0] \
                == 4608 * 20
        assert con.execute("SELECT count(*) FROM mp_steps WHERE dictionary = 'demo-mp'").fetchone()[0] > 0
        assert con.execute("SELECT count(DISTINCT (layer, head)) FROM head_stats").fetchone()[0] == 30 * 9
        hooks = dict(con.execute("SELECT name, hook FROM dictionaries").fetchall())
        assert hooks["demo-topk-l10"] == "blocks.10.hook_resid_post" and hooks["demo-mp"] == "blocks.6.hook_resid_post"
        assert con.execute("SELECT count(*) FROM activation_caches").fetchone()[0] == 4
    finally:
        con.close()
    for name in DICTS:
        report = (ws / "reports" / f"{name}.md").read_text()
        assert report.count("\n## Feature ") == 5
    second = _demo(ws)
    assert "activation cache" in second and "reused" in second
    assert second.count("feature statistics reused") == len(DICTS) and "head scores" in second and "(reused)" in second
