"""A synthetic, demo-shaped store for report tests and bench/report.py, written with the real store functions.

Four dictionaries on a small English vocabulary (TopK, MP, codebook, attention-output), each analysed with
top and quantile examples, log-spaced histograms, logit tables and neighbours; labels (one hostile); head
scores and head attribution for the attention dictionary. Built column-wise with numpy: 1,000 features
take about a second.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from store import dictionaries as dict_repo
from store.features import write_feature_stats, write_vocab
from store.queries import feature_card

MODEL, CORPUS, CTX_LEN, N_CONTEXTS, WINDOW = "tiny-demo", "demo-text", 32, 200, 17
WORDS = ("the cat sat on a mat while dog ran to park and it was very quiet there until rain came down "
         "on every roof of old town so people stayed inside reading books about history science music "
         "art love war peace numbers 1 2 3 4 5 code python function return value").split()
VOCAB = ["<bos>", "\n", " <b>", " &amp;", " \"quoted\""] + [f" {w}" for w in WORDS] + [w.capitalize() for w in WORDS]
DICTIONARIES = {  # name: (arch, hook, fvu, l0)
    "topk-demo": ("topk", "blocks.1.hook_resid_post", 0.21, 32.0),
    "mp-demo": ("mp", "blocks.1.hook_resid_post", 0.25, 24.0),
    "codebook-demo": ("codebook", "blocks.1.hook_resid_post", 0.40, 8.0),
    "attn-demo": ("topk", "blocks.1.attn.hook_z", 0.30, 16.0),
}
HOSTILE_LABEL = "<script>alert('x')</script> & \"quotes\""


def _i(values, kind=pa.int32()):
    return pa.array(np.asarray(values), kind)


def _examples(rng, n_feat: int, max_act: np.ndarray, n_top: int, n_bands: int, per_band: int) -> pa.Table:
    slots = n_top + n_bands * per_band
    feat = np.repeat(np.arange(n_feat), slots)
    slot = np.tile(np.arange(slots), n_feat)
    top = slot < n_top
    band = np.where(top, -1, n_bands - 1 - (slot - n_top) // per_band)
    rank = np.where(top, slot, (slot - n_top) % per_band)
    peak_frac = np.where(top, 1.0 - 0.02 * slot, (band + rng.random(len(slot))) / n_bands)
    activation = (max_act[feat] * np.clip(peak_frac, 0.01, 1.0)).astype(np.float32)
    position = rng.integers(WINDOW // 2, CTX_LEN - WINDOW // 2, len(feat))
    window_start = position - WINDOW // 2
    acts = rng.random((len(feat), WINDOW), dtype=np.float32) * activation[:, None] * 0.6
    acts[rng.random(acts.shape) < 0.6] = 0.0
    acts[:, WINDOW // 2] = activation
    offsets = pa.array(np.arange(len(feat) + 1) * WINDOW, pa.int32())
    return pa.table({"feature": _i(feat), "kind": pa.array(np.where(top, "top", "quantile")),
                     "band": pa.array(np.where(top, None, band), pa.int16(), from_pandas=True),
                     "rank": _i(rank, pa.int16()), "corpus": pa.array([CORPUS] * len(feat)),
                     "context_id": _i(rng.integers(0, N_CONTEXTS, len(feat))), "position": _i(position),
                     "activation": pa.array(activation), "window_start": _i(window_start),
                     "token_acts": pa.ListArray.from_arrays(offsets, acts.reshape(-1))})


def _ranked(rng, n_feat: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.repeat(np.arange(n_feat), k), np.tile(np.arange(k), n_feat)


def synthetic_tables(seed: int, n_feat: int, n_top: int = 20, n_bands: int = 10, per_band: int = 5,
                     mp: bool = False) -> dict[str, pa.Table]:
    rng = np.random.default_rng(seed)
    count = rng.integers(1, 20_000, n_feat)
    count[::17] = 0  # a few dead features, as in any real dictionary
    max_act = np.where(count > 0, rng.gamma(2.0, 2.0, n_feat) + 0.5, 0.0)
    alive = count > 0
    tables = {"features": pa.table({
        "feature": _i(np.arange(n_feat)), "count": pa.array(count, pa.int64()), "density": count / 400_000,
        "mean_act": max_act * 0.3, "max_act": max_act, "decoder_norm": rng.normal(1, 0.05, n_feat),
        "max_decoder_cos": rng.random(n_feat)})}
    live = np.flatnonzero(alive)
    tables["feature_examples"] = _examples(rng, n_feat, max_act, n_top, n_bands, per_band).filter(
        pa.array(np.isin(np.repeat(np.arange(n_feat), n_top + n_bands * per_band), live)))
    f, b = _ranked(rng, n_feat, 20)
    keep = np.isin(f, live)
    lo = np.exp(np.log(1e-2) + b * 0.25)
    tables["feature_histograms"] = pa.table({"feature": _i(f[keep]), "bin": _i(b[keep], pa.int16()),
                                             "bin_lo": lo[keep], "bin_hi": lo[keep] * np.exp(0.25),
                                             "count": rng.integers(1, 500, keep.sum())})
    f, r = _ranked(rng, n_feat, 20)
    token_id = rng.integers(1, len(VOCAB), len(f))
    tables["feature_logits"] = pa.table({
        "feature": _i(f), "sign": pa.array(np.where(r < 10, 1, -1), pa.int8()), "rank": _i(r % 10, pa.int16()),
        "token_id": _i(token_id), "token": pa.array([VOCAB[t] for t in token_id]),
        "value": np.where(r < 10, 1.0, -1.0) * (2.0 - 0.1 * (r % 10))})
    tables["feature_neighbors"] = pa.table({
        "feature": _i(f), "kind": pa.array(np.where(r < 10, "decoder", "cooccurrence")),
        "rank": _i(r % 10, pa.int16()), "other": _i((f + 1 + r) % n_feat), "score": 0.9 - 0.04 * (r % 10)})
    if mp:
        f, s = _ranked(rng, n_feat, 4)
        tables["mp_steps"] = pa.table({"feature": _i(f), "step": _i(s, pa.int16()),
                                       "count": rng.integers(0, 100, len(f))})
        tables["mp_parents"] = pa.table({"feature": _i(f), "rank": _i(s, pa.int16()),
                                         "parent": _i((f + 7 * (s + 1)) % n_feat), "count": 40 - 5 * s})
    return tables


def _corpus(con, rng) -> None:
    con.execute("INSERT INTO models (name, n_layers, d_model, n_params, d_vocab) VALUES (?, 2, 64, 1000, ?)",
                [MODEL, len(VOCAB)])
    con.execute("INSERT INTO corpora (name, model, source, ctx, bos, n_contexts, n_tokens) "
                "VALUES (?, ?, 'synthetic', ?, true, ?, ?)", [CORPUS, MODEL, CTX_LEN, N_CONTEXTS, CTX_LEN * N_CONTEXTS])
    ids = rng.integers(1, len(VOCAB), (N_CONTEXTS, CTX_LEN)).astype(np.int32)
    con.register("_ctx", pa.table({"context_id": _i(np.arange(N_CONTEXTS)),
                                   "token_ids": pa.array(list(ids), pa.list_(pa.int32())),
                                   "text": pa.array(["".join(VOCAB[t] for t in row) for row in ids])}))
    con.execute("INSERT INTO contexts SELECT ?, context_id, token_ids, text FROM _ctx", [CORPUS])
    con.unregister("_ctx")
    write_vocab(con, MODEL, VOCAB)


def _has(con, table: str) -> bool:
    return con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]).fetchone()[0] > 0


def _steering(con) -> None:
    """Two runs in the stored layout: one on feature 1 of topk-demo, one on feature 30."""
    for feature, strength in ((1, 4.0), (30, -2.0)):
        config = {"prompt": "Tell me about <pets> & friends", "model": MODEL, "chat": True, "max_new_tokens": 8,
                  "samples": 2, "seed": 0, "temperature": 0.7, "top_p": 0.9,
                  "interventions": [{"mode": "add", "dictionary": "topk-demo", "feature": feature,
                                     "strength": strength, "positions": "all", "value": None, "trigger": None}]}
        measures = {"kl_mean": 0.4, "kl_per_position": [0.1, 0.3, 0.5, 0.7], "perplexity_steered": 12.5,
                    "perplexity_default": 9.0, "targets": [{"label": f"topk-demo:{feature}",
                                                            "steered": {"mean": 2.0, "max": 3.5, "fired": 0.8},
                                                            "default": {"mean": 0.1, "max": 0.9, "fired": 0.1}}]}
        con.execute("INSERT INTO steering_runs (model, dictionary, config, default_texts, steered_texts, measures) "
                    "VALUES (?, 'topk-demo', ?, ?, ?, ?)",
                    [MODEL, json.dumps(config), ["The cat sat.", "A dog ran."],
                     ["Cats, cats <everywhere>!", "Dogs & cats."], json.dumps(measures)])


def _heads(con, n_feat: int) -> None:
    con.execute("INSERT INTO head_runs (model, corpus, n_layers, n_heads, n_kv_heads, n_contexts, n_tokens) "
                "VALUES (?, ?, 2, 4, 2, ?, ?)", [MODEL, CORPUS, N_CONTEXTS, CTX_LEN * N_CONTEXTS])
    for layer in range(2):
        for head in range(4):
            for score in ("prev_token", "induction", "entropy"):
                con.execute("INSERT INTO head_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            [MODEL, CORPUS, layer, head, head // 2, score, (layer * 4 + head) / 8, 6400])
    weights = np.random.default_rng(3).dirichlet(np.ones(4), n_feat)
    con.register("_heads", pa.table({"feature": _i(np.repeat(np.arange(n_feat), 4)),
                                     "head": _i(np.tile(np.arange(4), n_feat), pa.int16()),
                                     "weight": pa.array(weights.reshape(-1), pa.float32())}))
    con.execute("INSERT INTO feature_heads SELECT 'attn-demo', feature, head, weight FROM _heads")
    con.unregister("_heads")


def build_report_store(con, n_features: int = 48, per_band: int = 5, seed: int = 0, path_root: str = "/nowhere",
                       labels: bool = True) -> None:
    """Fill `con` (a migrated store) with the synthetic workspace described above."""
    rng = np.random.default_rng(seed)
    _corpus(con, rng)
    for i, (name, (arch, hook, fvu, l0)) in enumerate(DICTIONARIES.items()):
        dict_repo.add_dictionary(con, dict_repo.DictionaryRow(name, MODEL, hook, arch, 64, n_features, 8,
                                                              f"{path_root}/dictionaries/{name}"))
        dict_repo.set_metrics(con, name, {"fvu": fvu, "l0": l0, "dead": 0.05, "ce_recovered": 0.9 - fvu})
        write_feature_stats(con, name, CORPUS, synthetic_tables(seed + i, n_features, per_band=per_band,
                                                                mp=arch == "mp"), n_tokens=400_000)
    if _has(con, "head_stats"):  # stores from before the heads and steering migrations lack these parts
        _heads(con, n_features)
    if _has(con, "steering_runs"):
        _steering(con)
    if labels:
        dict_repo_labels = [(1, "cat and dog", "fires on pets\nsecond line"), (2, HOSTILE_LABEL, "<b>bold?</b>"),
                            (5, "numbers", ""), (6, "", "notes only")]
        for feature, label, notes in dict_repo_labels:
            con.execute("INSERT INTO feature_labels (dictionary, feature, label, notes) VALUES ('topk-demo', ?, ?, ?)",
                        [feature, label, notes])


def test_builder_makes_complete_cards(con):
    build_report_store(con, n_features=20)
    card = feature_card(con, "topk-demo", 1)
    assert card.label == "cat and dog" and len(card.top_examples) == 20 and len(card.quantile_examples) == 50
    assert card.top_examples[0].tokens and len(card.promoted) == 10 and len(card.decoder_neighbors) == 10
    assert feature_card(con, "mp-demo", 3).mp_parents
    assert feature_card(con, "topk-demo", 0).count == 0  # dead: no examples, no histogram
