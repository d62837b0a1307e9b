"""`sparsescope demo` reuses a stored feature analysis only when it describes the built-in corpus' current text."""
import pyarrow as pa

from store import Workspace, session
from store.corpora import Corpus, corpus_fingerprint, save_corpus
from store.features import write_feature_stats


def test_demo_reanalyses_what_was_analysed_on_other_text(tmp_path, monkeypatch):
    import analysis.features.analyze
    from app.commands import demo

    ws = Workspace.resolve(tmp_path / "ws")
    ids = [[0, 1, 2, 3], [0, 4, 5, 6]]
    features = pa.table({"feature": pa.array([0], pa.int32()), "count": pa.array([1], pa.int64()),
                         "density": [0.5], "mean_act": [1.0], "max_act": [1.0]})
    with session(ws.db_path) as con:
        save_corpus(con, Corpus("builtin", "smollm2-135m-instruct", "builtin", 4, True, 2, 8), ids, ["a", "b"])
        current = corpus_fingerprint(con, "builtin")
        for d in demo.DEMO_DICTIONARIES:
            write_feature_stats(con, d.name, "builtin", {"features": features}, n_tokens=10_000,
                                model="smollm2-135m-instruct", corpus_fingerprint=current)
        con.execute("UPDATE analyses SET corpus_fingerprint = ? WHERE dictionary = 'demo-mp'", ["0" * 64])
        con.execute("UPDATE analyses SET corpus_fingerprint = NULL WHERE dictionary = 'demo-codebook'")
    analysed = []

    def fake_analyze(space, req, lm=None, progress=True):
        analysed.append(req.dictionary)
        return analysis.features.analyze.AnalyzeOutcome(req.dictionary, "builtin", 10_000, "test", 0.0, 1, 1)

    monkeypatch.setattr(analysis.features.analyze, "analyze_dictionary", fake_analyze)
    demo._analyses(ws, lm=None, tokens=10_000)
    assert analysed == ["demo-mp", "demo-codebook"]


def test_demo_trains_each_dictionary_for_passes_over_its_cache(tmp_path, monkeypatch):
    import analysis.training
    from app.commands import demo

    ws = Workspace.resolve(tmp_path / "ws")
    asked = []

    def fake_train(space, request, lm=None, progress=True, evals=None):
        asked.append((request.name, request.tokens, request.activations))
        return None, {"fvu": 0.1, "l0": 8.0}

    monkeypatch.setattr(analysis.training, "train_in_workspace", fake_train)
    caches = {hook: f"cache-{hook}" for hook in demo.DEMO_HOOKS}
    demo._dictionaries(ws, None, caches, 204_800)  # the demo's cache: several passes each
    demo._dictionaries(ws, None, caches, 16_384)  # a small cache: never fewer tokens than min_tokens
    layers = [("demo-topk-l2", "blocks.2"), ("demo-topk-l10", "blocks.10"), ("demo-topk-l14", "blocks.14")]
    assert [(name, tokens) for name, tokens, _ in asked] == [
        ("demo-topk", 1_024_000), ("demo-mp", 614_400), ("demo-codebook", 614_400),
        *((name, 409_600) for name, _ in layers),
        ("demo-topk", 300_000), ("demo-mp", 49_152), ("demo-codebook", 49_152),
        *((name, 300_000) for name, _ in layers)]
    # each dictionary trains on its own layer's cache
    first = asked[:6]
    assert {name: cache for name, _, cache in first} == {
        "demo-topk": "cache-blocks.6.hook_resid_post", "demo-mp": "cache-blocks.6.hook_resid_post",
        "demo-codebook": "cache-blocks.6.hook_resid_post",
        **{name: f"cache-{block}.hook_resid_post" for name, block in layers}}
