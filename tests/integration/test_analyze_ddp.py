"""torchrun analysis (gloo, 2 CPU processes) stores what a single process stores."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
HOOK = "blocks.0.hook_resid_post"
N_CTX, CTX = 40, 16
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

EXACT = {
    "feature_histograms": "feature, bin, bin_lo, bin_hi, count",
    "feature_examples": "feature, kind, band, rank, context_id, position, activation, window_start, token_acts",
    "feature_neighbors": "feature, kind, rank, other, score",
    "feature_logits": "feature, sign, rank, token_id, value",
    "mp_steps": "feature, step, count",
    "mp_parents": "feature, rank, parent, count",
}


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """A workspace with a corpus, a cache over its first half, and topk and mp dictionaries trained on it."""
    from analysis.activations import build_cache
    from analysis.corpora import add_corpus
    from analysis.training import TrainRequest, train_dictionary
    from sae.models import load_model
    from store import Workspace, session

    lm = load_model("tiny-random", device="cpu")
    ws = Workspace.resolve(tmp_path_factory.mktemp("ddp") / "ws")
    src = tmp_path_factory.mktemp("src") / "t.txt"
    src.write_text("".join(f"Line {i} of the corpus: {i * 7 % 13} and {i % 5} things.\n\n" for i in range(300)))
    torch.manual_seed(0)
    with session(ws.db_path) as con:
        add_corpus(con, "t", str(src), "tiny-random", ctx=CTX)
        cache = build_cache(ws, con, lm, HOOK, "t", tokens=N_CTX * CTX, progress=False)
        for name, arch in (("tk", "topk"), ("mp", "mp")):
            train_dictionary(ws, con, TrainRequest(arch=arch, activations=cache.path.name, name=name, d_sae=96,
                                                   k=4, tokens=512, batch=128, lr=1e-2), lm=lm, progress=False)
    return ws


def _analyze(ws, launcher: list[str], name: str, tokens: int) -> str:
    args = ["analyze", name, "--corpus", "t", "--tokens", str(tokens), "--examples", "5", "--quantiles", "4",
            "--batch", "8", "-w", str(ws.root)]
    env = os.environ | {"SPARSESCOPE_QUIET": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(f"{name} analysed on") == 1  # only rank 0 reports (and writes)
    return done.stdout


def _results(ws, name: str) -> dict:
    from store import session

    with session(ws.db_path, read_only=True) as con:
        out = {t: con.execute(f"SELECT {cols} FROM {t} WHERE dictionary = ? ORDER BY {cols}", [name]).fetchall()
               for t, cols in EXACT.items()}
        out["features"] = con.execute("SELECT feature, count, density, mean_act, max_act, decoder_norm "
                                      "FROM features WHERE dictionary = ? ORDER BY feature", [name]).fetchall()
        out["analysis"] = con.execute("SELECT corpus, n_tokens, config FROM analyses WHERE dictionary = ?",
                                      [name]).fetchone()
    return out


# tk reads the cache; mp asks for more tokens than the cache holds, so each rank runs the model on its share
@pytest.mark.parametrize("name, tokens", [("tk", N_CTX * CTX), ("mp", 2 * N_CTX * CTX)])
def test_two_gloo_processes_store_what_one_process_stores(space, name, tokens):
    stdout = _analyze(space, [sys.executable], name, tokens)
    assert ("from cache" in stdout) == (name == "tk")
    single = _results(space, name)
    _analyze(space, TORCHRUN, name, tokens)
    ddp = _results(space, name)
    assert single["analysis"] == ddp["analysis"]
    assert len(single["feature_examples"]) > 0 and any(r[1] == "cooccurrence" for r in single["feature_neighbors"])
    assert (len(single["mp_parents"]) > 0) == (name == "mp")
    for table in EXACT:
        assert ddp[table] == single[table], table
    a, b = np.array(single["features"], dtype=np.float64), np.array(ddp["features"], dtype=np.float64)
    np.testing.assert_array_equal(a[:, :3], b[:, :3])  # feature, count, density
    np.testing.assert_allclose(a[:, 3:], b[:, 3:], rtol=1e-12)  # float64 sums added in another order
