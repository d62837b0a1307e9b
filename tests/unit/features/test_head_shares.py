"""`analyze` on an attention-output (hook_z) dictionary stores head attribution: checked against a brute-force
per-head split of the encoder's linear term, rebuilt from the attention pattern and the values (not from hook_z)."""
import numpy as np
import pytest
import torch

from analysis.corpora import add_corpus
from analysis.features.analyze import AnalyzeRequest, analyze_dictionary
from sae.dictionaries import build_training_sae, load_dictionary, save_dictionary
from store import session
from store.corpora import context_tokens
from store.dictionaries import DictionaryRow, add_dictionary
from tests.factories import dict_spec

pytestmark = pytest.mark.usefixtures("one_thread")

LAYER = 1
HOOK = f"blocks.{LAYER}.attn.hook_z"
N_CTX, CTX, D_SAE = 12, 16, 48


def _hook_z_dictionary(ws, con, name: str, arch: str, hook: str = HOOK, d_in: int = 64) -> None:
    torch.manual_seed(3)
    sae = build_training_sae(dict_spec(arch, d_in=d_in, d_sae=D_SAE, k=4, hook_name=hook))
    with torch.no_grad():
        for param in sae.parameters():  # non-zero biases: the stored shares must leave them out
            param.add_(torch.randn_like(param) * 0.1)
    folder = ws.dictionaries_dir / name
    save_dictionary(sae, folder)
    add_dictionary(con, DictionaryRow(name, "tiny-random", hook, arch, d_in, D_SAE, 4, str(folder)))


@pytest.fixture(scope="module")
def space(tmp_path_factory, tiny_model):
    from store import Workspace

    ws = Workspace.resolve(tmp_path_factory.mktemp("heads") / "ws")
    src = tmp_path_factory.mktemp("src") / "t.txt"
    src.write_text("".join(f"Row {i}: the cat sat on mat {i * 5 % 11}, then left.\n\n" for i in range(120)))
    with session(ws.db_path) as con:
        add_corpus(con, "t", str(src), "tiny-random", ctx=CTX)
        _hook_z_dictionary(ws, con, "attn-tk", "topk")
        _hook_z_dictionary(ws, con, "attn-mp", "mp")
        _hook_z_dictionary(ws, con, "resid", "topk", hook="blocks.0.hook_resid_post", d_in=tiny_model.cfg.d_model)
    return ws


def _analyze(ws, lm, name):
    return analyze_dictionary(ws, AnalyzeRequest(name, corpus="t", tokens=N_CTX * CTX, examples=3, quantiles=2,
                                                 batch=5), lm=lm, progress=False)


def _stored(ws, name) -> np.ndarray:
    """[feature, head] stored weights, NaN where a feature has no rows."""
    with session(ws.db_path) as con:
        rows = con.execute("SELECT feature, head, weight FROM feature_heads WHERE dictionary = ?", [name]).fetchall()
    out = np.full((D_SAE, 4), np.nan)
    for feature, head, weight in rows:
        out[feature, head] = weight
    return out


def _brute_force(ws, lm, name) -> np.ndarray:
    """sum over firings (positions >= 1) of |sum_s A_h[t, s] v_h[s] . W_enc[h-block, i]|, normalised per feature."""
    with session(ws.db_path) as con:
        path = con.execute("SELECT path FROM dictionaries WHERE name = ?", [name]).fetchone()[0]
        tokens = torch.tensor(context_tokens(con, "t", 0, N_CTX))
    sae = load_dictionary(path)
    n_heads, d_head = lm.cfg.n_heads, lm.cfg.d_head
    w = sae.W_enc.detach().double().reshape(n_heads, d_head, -1)  # (head, d_head, feature)
    total = np.zeros((sae.cfg.d_sae, n_heads))
    names = [f"blocks.{LAYER}.attn.hook_{n}" for n in ("pattern", "v", "z")]
    with torch.no_grad():
        _, cache = lm.run_with_cache(tokens, names_filter=names)
        acts = sae.encode(cache[names[2]].reshape(N_CTX * CTX, -1)).view(N_CTX, CTX, -1)
    for c in range(N_CTX):
        pattern, v = cache[names[0]][c].double(), cache[names[1]][c].double()  # (head, dest, src), (src, head, d)
        for t in range(1, CTX):
            for i in torch.nonzero(acts[c, t] > 0).flatten().tolist():
                for h in range(n_heads):
                    total[i, h] += abs(float(sum(pattern[h, t, s] * (v[s, h] @ w[h, :, i]) for s in range(t + 1))))
    norm = total.sum(1, keepdims=True)
    return np.where(norm > 0, total / np.where(norm > 0, norm, 1), np.nan)


@pytest.mark.parametrize("name", ["attn-tk", "attn-mp"])
def test_stored_head_shares_equal_a_brute_force_split(space, tiny_model, name):
    _analyze(space, tiny_model, name)
    got, want = _stored(space, name), _brute_force(space, tiny_model, name)
    assert np.isfinite(want).any(), "no feature fired: the check would prove nothing"
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))  # rows for exactly the features that fired
    np.testing.assert_allclose(got[np.isfinite(got)], want[np.isfinite(want)], atol=2e-5)
    np.testing.assert_allclose(np.nansum(got, 1)[np.isfinite(got[:, 0])], 1.0, atol=1e-5)
    # not the decoder-norm split: the stored weights depend on the data
    assert np.nanmax(got) - np.nanmin(got) > 0.05


def test_reports_read_what_analyze_stored_and_other_hooks_store_none(space, tiny_model):
    from analysis.reports.extras import head_attribution

    _analyze(space, tiny_model, "attn-tk")
    _analyze(space, tiny_model, "resid")
    stored = _stored(space, "attn-tk")
    feature = int(np.flatnonzero(np.isfinite(stored[:, 0]))[0])
    with session(space.db_path) as con:
        shares = head_attribution(con, "attn-tk", [feature])[feature]
        assert [h for h, _ in shares] == ["H0", "H1", "H2", "H3"]
        np.testing.assert_allclose([s for _, s in shares], stored[feature], atol=1e-7)
        assert con.execute("SELECT count(*) FROM feature_heads WHERE dictionary = 'resid'").fetchone()[0] == 0
