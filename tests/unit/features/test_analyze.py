"""`sparsescope analyze` / `codes`: the pass from a dictionary and a corpus to the store, checked by brute force."""
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from analysis.activations import build_cache
from analysis.corpora import add_corpus
from analysis.features.analyze import AnalyzeRequest, analyze_dictionary, search_codes
from analysis.features.codes import search_tokens
from analysis.training import TrainRequest, train_dictionary
from sae.activation_reader import ActivationReader
from sae.dictionaries import load_dictionary
from store import InputError, session
from store.corpora import context_tokens
from store.queries import feature_card

HOOK = "blocks.0.hook_resid_post"
N_CTX, CTX = 40, 16


@pytest.fixture(scope="module")
def space(tmp_path_factory, tiny_model):
    """A workspace with a corpus, a cache over all of it, and topk, mp and codebook dictionaries."""
    from store import Workspace

    ws = Workspace.resolve(tmp_path_factory.mktemp("analyze") / "ws")
    src = tmp_path_factory.mktemp("src") / "t.txt"
    src.write_text("".join(f"Line {i} of the test corpus says something new: {i * 7 % 13}.\n\n" for i in range(200)))
    torch.manual_seed(0)
    with session(ws.db_path) as con:
        corpus = add_corpus(con, "t", str(src), "tiny-random", ctx=CTX)
        assert corpus.n_contexts >= N_CTX
        cache = build_cache(ws, con, tiny_model, HOOK, "t", tokens=N_CTX * CTX, progress=False)
        for name, arch, k in (("tk", "topk", 4), ("mp", "mp", 4), ("cb", "codebook", 2)):
            train_dictionary(ws, con, TrainRequest(arch=arch, activations=cache.path.name, name=name, d_sae=96,
                                                   k=k, tokens=512, batch=128, lr=1e-2),
                             lm=tiny_model, progress=False)
    return ws, cache.path


def _analyze(ws, lm, name, **kw):
    return analyze_dictionary(ws, AnalyzeRequest(name, corpus="t", tokens=N_CTX * CTX, examples=5, quantiles=4,
                                                 **kw), lm=lm, progress=False)


def _brute_force(ws, cache, name):
    """Feature activations of every (context, position >= 1) of the cache, computed directly: [n, ctx-1, d_sae]."""
    with session(ws.db_path) as con:
        path = con.execute("SELECT path FROM dictionaries WHERE name = ?", [name]).fetchone()[0]
    sae = load_dictionary(path)
    acts = torch.cat([a for _, a in ActivationReader(cache).contexts(N_CTX)])
    with torch.no_grad():
        f = sae.encode(acts.reshape(-1, acts.shape[-1])).view(N_CTX, CTX, -1)
    return f[:, 1:].float(), sae


@pytest.mark.parametrize("name", ["tk", "mp"])
def test_statistics_match_brute_force(space, tiny_model, name):
    ws, cache = space
    out = _analyze(ws, tiny_model, name)
    assert out.source.startswith("cache") and out.n_tokens == N_CTX * (CTX - 1)
    f, sae = _brute_force(ws, cache, name)
    flat = f.reshape(-1, f.shape[-1])
    count = (flat > 0).sum(0).numpy()
    with session(ws.db_path) as con:
        rows = con.execute("SELECT feature, count, density, max_act FROM features WHERE dictionary = ? "
                           "ORDER BY feature", [name]).fetchall()
        got = np.array([r[1] for r in rows])
        np.testing.assert_array_equal(got, count)
        np.testing.assert_allclose([r[2] for r in rows], count / flat.shape[0])
        np.testing.assert_allclose([r[3] for r in rows], flat.max(0).values.numpy(), rtol=1e-6)
        feature = int(np.argmax(count))
        card = feature_card(con, name, feature)
        top = sorted(flat[:, feature].tolist(), reverse=True)[:5]
        np.testing.assert_allclose([e.activation for e in card.top_examples], top, rtol=1e-6)
        assert all(e.position >= 1 for e in card.top_examples + card.quantile_examples)
        # decoder neighbours equal a full cosine matrix
        w = torch.nn.functional.normalize(sae.W_dec.detach().float(), dim=1)
        cos = w @ w.T
        cos.fill_diagonal_(-2)
        assert card.decoder_neighbors[0].id == int(cos[feature].argmax())
        assert len(card.promoted) == 10 and card.promoted[0].value >= card.promoted[-1].value
        n_steps = con.execute("SELECT count(*) FROM mp_steps WHERE dictionary = ?", [name]).fetchone()[0]
        assert (n_steps > 0) == (name == "mp")
        assert con.execute("SELECT count(*) FROM vocab WHERE model = 'tiny-random'").fetchone()[0] == \
            tiny_model.cfg.d_vocab


def test_model_pass_equals_cache_pass_and_rerun_replaces(space, tiny_model, tmp_path):
    ws, cache = space
    _analyze(ws, tiny_model, "tk")
    with session(ws.db_path) as con:
        from_cache = con.execute("SELECT * EXCLUDE (dictionary) FROM features WHERE dictionary = 'tk' "
                                 "ORDER BY feature").fetchall()
        n_examples = con.execute("SELECT count(*) FROM feature_examples WHERE dictionary = 'tk'").fetchone()[0]
    moved = cache.with_name(cache.name + ".away")
    cache.rename(moved)  # the store still lists the cache, but it no longer covers anything: the model runs
    try:
        out = _analyze(ws, tiny_model, "tk")
    finally:
        moved.rename(cache)
    assert out.source == "tiny-random forward"
    with session(ws.db_path) as con:
        from_model = con.execute("SELECT * EXCLUDE (dictionary) FROM features WHERE dictionary = 'tk' "
                                 "ORDER BY feature").fetchall()
        assert con.execute("SELECT count(*) FROM feature_examples WHERE dictionary = 'tk'").fetchone()[0] == \
            n_examples
    assert len(from_model) == len(from_cache)
    for a, b in zip(from_model, from_cache):
        assert a[:2] == b[:2]  # feature, count
        np.testing.assert_allclose(a[2:5], b[2:5], rtol=1e-4)


def test_codebook_analysis_and_code_search(space, tiny_model):
    ws, cache = space
    out = _analyze(ws, tiny_model, "cb")
    assert out.alive > 0
    # a code's activation is its cosine similarity to the LayerNorm'd input where it is chosen
    indicators, sae = _brute_force(ws, cache, "cb")
    acts = torch.cat([a for _, a in ActivationReader(cache).contexts(N_CTX)])[:, 1:]
    x = acts.reshape(-1, acts.shape[-1]).double()
    h = (x - x.mean(-1, keepdim=True)) / x.std(-1, correction=0, keepdim=True)
    unit = torch.nn.functional.normalize
    cos = unit(h, dim=-1) @ unit(sae.W_dec.detach().double(), dim=-1).T
    chosen = indicators.reshape(-1, indicators.shape[-1]) > 0
    with session(ws.db_path) as con:
        rows = con.execute("SELECT feature, count, max_act FROM features WHERE dictionary = 'cb' ORDER BY feature"
                           ).fetchall()
        np.testing.assert_array_equal([r[1] for r in rows], chosen.sum(0).numpy())  # chosen = fired
        used = chosen.any(0).numpy()
        best = torch.where(chosen, cos, torch.zeros_like(cos)).max(0).values.numpy()
        np.testing.assert_allclose(np.array([r[2] for r in rows])[used], best[used], rtol=1e-4)
        code = int(chosen.sum(0).argmax())
        card = feature_card(con, "cb", code)
        top = sorted(cos[chosen[:, code], code].tolist(), reverse=True)[:5]
        np.testing.assert_allclose([e.activation for e in card.top_examples], top, rtol=1e-4)
    matches = search_codes(ws, AnalyzeRequest("cb", corpus="t", tokens=N_CTX * CTX), r"\d", limit=5,
                           lm=tiny_model, progress=False)
    assert matches and all(0 <= m.precision <= 1 and 0 < m.recall <= 1 for m in matches)
    assert [m.precision for m in matches] == sorted((m.precision for m in matches), reverse=True)
    # the UI's path (the model run on the contexts' token ids) ranks the same codes as the CLI's (the cache)
    with session(ws.db_path, read_only=True) as con:
        token_ids = torch.tensor(context_tokens(con, "t", 0, N_CTX))
    assert search_tokens(tiny_model, sae, HOOK, token_ids, r"\d", limit=5, batch=7) == matches


def test_search_tokens_refuses_bad_regexes_and_other_architectures(space, tiny_model):
    ws, _ = space
    _, topk = _brute_force(ws, space[1], "tk")
    with pytest.raises(InputError, match="does not compile"):
        search_tokens(tiny_model, topk, HOOK, torch.zeros(1, 4, dtype=torch.long), "(unclosed")
    with pytest.raises(InputError, match="needs a codebook dictionary, not topk"):
        search_tokens(tiny_model, topk, HOOK, torch.zeros(1, 4, dtype=torch.long), "a")


def _results(ws):
    with session(ws.db_path) as con:
        return con.execute("SELECT dictionary, count(*) FROM features GROUP BY 1 ORDER BY 1").fetchall()


@pytest.mark.parametrize("args, needle", [
    (["analyze", "nope"], "unknown dictionary 'nope'"),
    (["analyze", "tk", "--tokens", "0"], "--tokens must be at least 1"),
    (["analyze", "tk", "--corpus", "missing"], "unknown corpus 'missing'"),
    (["codes", "tk", "a"], "is a topk dictionary; this needs a codebook one"),
    (["codes", "cb", "(unclosed"], "does not compile"),
    (["analyze", "tk", "--residual-threshold", "0.1"], "applies to mp (matching pursuit) dictionaries, not topk"),
    (["analyze", "mp", "--residual-threshold", "-1"], "--residual-threshold must be a finite number >= 0"),
])
def test_bad_input_is_one_line_and_writes_nothing(space, tiny_model, monkeypatch, args, needle):
    import sae.models

    ws, _ = space
    monkeypatch.setattr(sae.models, "load_model", lambda *a, **k: tiny_model)
    before = _results(ws)
    from app.cli import app

    result = CliRunner().invoke(app, [*args, "-w", str(ws.root)])
    assert result.exit_code != 0 and needle in str(result.exception)
    assert _results(ws) == before


def test_dictionary_for_another_width_is_refused(space, tiny_model, monkeypatch):
    ws, _ = space
    with session(ws.db_path) as con:
        con.execute("UPDATE dictionaries SET hook = 'blocks.0.mlp.hook_post' WHERE name = 'tk'")
    try:
        before = _results(ws)
        with pytest.raises(InputError, match="has d_in=64, but tiny-random gives d=.* at blocks.0.mlp.hook_post"):
            _analyze(ws, tiny_model, "tk")
        assert _results(ws) == before
    finally:
        with session(ws.db_path) as con:
            con.execute("UPDATE dictionaries SET hook = ? WHERE name = 'tk'", [HOOK])


def test_the_analysis_records_the_corpus_fingerprint(space, tiny_model):
    from store.corpora import corpus_fingerprint

    ws, _ = space
    _analyze(ws, tiny_model, "tk")
    with session(ws.db_path) as con:
        recorded = con.execute("SELECT corpus_fingerprint FROM analyses WHERE dictionary = 'tk'").fetchone()[0]
        assert recorded is not None and recorded == corpus_fingerprint(con, "t")


@pytest.mark.parametrize("value, needle", [("0" * 64, "earlier text of corpus 't'"),
                                           (None, "predates corpus fingerprints")])
def test_a_cache_of_other_text_is_not_read(space, tiny_model, value, needle):
    import json

    from analysis.features.analyze import open_site
    from sae.activations import MANIFEST

    ws, cache = space
    req = AnalyzeRequest("tk", corpus="t", tokens=N_CTX * CTX)
    assert open_site(ws, req, tiny_model).cache == cache
    original = (cache / MANIFEST).read_text()
    raw = json.loads(original)
    raw["corpus_fingerprint"] = value
    try:
        (cache / MANIFEST).write_text(json.dumps(raw))
        site = open_site(ws, req, tiny_model)
    finally:
        (cache / MANIFEST).write_text(original)
    assert site.cache is None and needle in site.note and "the model runs instead" in site.note


def test_an_mp_dictionary_analysed_with_a_residual_threshold_stops_early(space, tiny_model):
    """A threshold above every input's norm stops each token after its first atom: one feature per token."""
    ws, _ = space
    counts = {}
    for threshold in (None, 1e9):
        out = _analyze(ws, tiny_model, "mp", residual_threshold=threshold)
        with session(ws.db_path) as con:
            counts[threshold] = con.execute("SELECT sum(count) FROM features WHERE dictionary = 'mp'").fetchone()[0]
    assert counts[1e9] <= out.n_tokens < counts[None]
