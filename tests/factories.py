"""Builders shared by the tests and the bench scripts. No pytest here: bench/*.py import this module too.

Configs (SAELens' tests/helpers.py pattern: defaults for a tiny run; a test overrides what it is about)
    dict_spec(arch, **fields)             a DictSpec on tiny-random's residual stream (d_in 64)
    train_config(**fields)                a TrainConfig that trains in seconds on CPU
    saved_dictionary(folder, **fields)    a freshly initialised dictionary saved in SAELens format
    steer_dictionary(folder, arch, ...)   the same, loaded as a SteerDictionary named after its architecture
Data
    TINY_IOI                              IOI task options (names, templates) that tiny-random can tokenise
    seeded_tiny(**cfg)                    a tiny-random HookedTransformer with config overrides, weights from seed 0
    sparse_activations(n, d_in)           learnable activations: sparse combinations of random directions
Stores
    feature_table(name, columns)          one analysis result table in the store's column types
    synthetic_feature_tables(n, ...)      every result table of one dictionary, random unless set
    build_report_store(con, ...)          a demo-shaped store: four dictionaries, labels, head scores, steering
    planted_examples(ids, tokens, ...)    feature_examples of features that fire exactly on one token each
    planted_dictionary(con, ...)          an analysed dictionary of such features on the report store's corpus
    token_windows(ids, acts, ...)         analysis.explain Windows from hand-written token ids and activations
    explained_workspace(root)             a workspace whose store holds the report store and a planted dictionary
    search_workspace(ws)                  tiny-random dictionaries on three hooks (search by text), one analysed

tests/ui_store.py builds the UI tests' workspace from real tiny-model activations (typed by feature_table).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa

TINY_MODEL, TINY_HOOK, TINY_D_MODEL = "tiny-random", "blocks.0.hook_resid_post", 64
TINY_IOI = dict(names=tuple("ABCDEFGH"), prefix="",
                templates=("Then {A} and {B} went home. {C} gave it to ", "So {A} met {B} and {C} waved at "))
"""IOI task options for tiny-random's byte tokenizer: one-letter names are single tokens with no space before."""
REPORT_MODEL, REPORT_CORPUS, REPORT_CTX_LEN, REPORT_N_CONTEXTS = "tiny-demo", "demo-text", 32, 200
"""The report store's model and corpus (build_report_store); synthetic_feature_tables defaults to them."""
_WORDS = ("the cat sat on a mat while dog ran to park and it was very quiet there until rain came down "
          "on every roof of old town so people stayed inside reading books about history science music "
          "art love war peace numbers 1 2 3 4 5 code python function return value").split()
REPORT_VOCAB = ("<bos>", "\n", " <b>", " &amp;", " \"quoted\"", *(f" {w}" for w in _WORDS),
                *(w.capitalize() for w in _WORDS))
"""A small English vocabulary with tokens that need escaping in HTML and Markdown."""
REPORT_DICTIONARIES = {  # name: (arch, hook, fvu, l0)
    "topk-demo": ("topk", "blocks.1.hook_resid_post", 0.21, 32.0),
    "mp-demo": ("mp", "blocks.1.hook_resid_post", 0.25, 24.0),
    "codebook-demo": ("codebook", "blocks.1.hook_resid_post", 0.40, 8.0),
    "attn-demo": ("topk", "blocks.1.attn.hook_z", 0.30, 16.0),
}
HOSTILE_LABEL = "<script>alert('x')</script> & \"quotes\""
REPORT_LABELS = ((1, "cat and dog", "fires on pets\nsecond line"), (2, HOSTILE_LABEL, "<b>bold?</b>"),
                 (5, "numbers", ""), (6, "", "notes only"))
"""(feature, label, notes) of topk-demo: multi-line notes, a hostile label, a label only, notes only."""


# ------------------------------------------------------------------------------------------- configs

def dict_spec(arch: str = "topk", d_in: int = TINY_D_MODEL, d_sae: int = 128, k: int | None = 4, **fields):
    """A DictSpec for tiny-random's residual stream; `k` applies only to architectures that have one."""
    from sae.dictionaries import DictSpec, architecture

    fields = {"hook_name": TINY_HOOK, "model_name": TINY_MODEL} | fields
    return DictSpec(arch, d_in, d_sae, k=k if architecture(arch).default_k is not None else None, **fields)


def train_config(**fields):
    """A TrainConfig for a run of seconds on CPU: no checkpoints unless asked, a log row every step."""
    from sae.dictionaries import architecture
    from sae.training import TrainConfig

    defaults = dict(arch="topk", d_sae=64, k=4, tokens=256 * 24, batch=256, lr=1e-2, checkpoint_every=0,
                    log_every=1, init_rows=1024, device="cpu")
    fields = defaults | fields
    if architecture(fields["arch"]).default_k is None:
        fields["k"] = None
    return TrainConfig(**fields)


def saved_dictionary(folder: str | Path, **spec_fields) -> Path:
    """A dictionary as built for training (weights from torch's global RNG), saved at `folder`."""
    from sae.dictionaries import build_training_sae, save_dictionary

    save_dictionary(build_training_sae(dict_spec(**spec_fields)), folder)
    return Path(folder)


def steer_dictionary(folder: str | Path, arch: str, hook: str = TINY_HOOK, d_in: int = TINY_D_MODEL,
                     d_sae: int = 128):
    """A tiny-random SteerDictionary named `arch` (weights from seed 1, k 4), saved under folder/arch."""
    import torch

    from analysis.steering.targets import SteerDictionary
    from sae.dictionaries import load_dictionary

    torch.manual_seed(1)
    saved = saved_dictionary(Path(folder) / arch, arch=arch, d_in=d_in, d_sae=d_sae, k=4, hook_name=hook)
    return SteerDictionary(arch, load_dictionary(saved), model=TINY_MODEL)


# ------------------------------------------------------------------------------------------- data

def seeded_tiny(**overrides):
    """A fresh tiny-random HookedTransformer with `tiny_config` overrides, its weights drawn from seed 0."""
    import torch
    from transformer_lens import HookedTransformer

    from sae.models import tiny_config, tiny_tokenizer

    torch.manual_seed(0)
    return HookedTransformer(tiny_config(**overrides), tokenizer=tiny_tokenizer()).eval()


def sparse_activations(n: int = 4000, d_in: int = 16, seed: int = 0) -> np.ndarray:
    """Sparse combinations of 48 random unit directions plus a little noise: learnable by any arch."""
    import torch

    g = torch.Generator().manual_seed(seed)
    atoms = torch.nn.functional.normalize(torch.randn(48, d_in, generator=g), dim=-1)
    codes = (torch.rand(n, 48, generator=g) < 0.08) * torch.rand(n, 48, generator=g) * 4
    return (codes @ atoms + 0.02 * torch.randn(n, d_in, generator=g) + 1.0).numpy()


# ------------------------------------------------------------------------------------------- result tables

_INT16, _INT32, _INT64, _F32, _F64, _STR = pa.int16(), pa.int32(), pa.int64(), pa.float32(), pa.float64(), pa.string()
RESULT_SCHEMAS: dict[str, pa.Schema] = {name: pa.schema(columns) for name, columns in {
    "features": [("feature", _INT32), ("count", _INT64), ("density", _F64), ("mean_act", _F64),
                 ("max_act", _F64), ("decoder_norm", _F64), ("max_decoder_cos", _F64)],
    "feature_histograms": [("feature", _INT32), ("bin", _INT16), ("bin_lo", _F64), ("bin_hi", _F64),
                           ("count", _INT64)],
    "feature_examples": [("feature", _INT32), ("kind", _STR), ("band", _INT16), ("rank", _INT16),
                         ("corpus", _STR), ("context_id", _INT32), ("position", _INT32), ("activation", _F32),
                         ("window_start", _INT32), ("token_acts", pa.list_(_F32))],
    "feature_logits": [("feature", _INT32), ("sign", pa.int8()), ("rank", _INT16), ("token_id", _INT32),
                       ("token", _STR), ("value", _F64)],
    "feature_neighbors": [("feature", _INT32), ("kind", _STR), ("rank", _INT16), ("other", _INT32),
                          ("score", _F64)],
    "mp_steps": [("feature", _INT32), ("step", _INT16), ("count", _INT64)],
    "mp_parents": [("feature", _INT32), ("rank", _INT16), ("parent", _INT32), ("count", _INT64)],
    "feature_heads": [("feature", _INT32), ("head", _INT16), ("weight", _F32)],
}.items()}
"""The Arrow types analysis/features/tables.py writes, per result table (store.features.RESULT_COLUMNS)."""


def feature_table(name: str, columns: Mapping[str, object]) -> pa.Table:
    """Result table `name` from one array (numpy, list or Arrow) per column, cast to the store's types."""
    schema = RESULT_SCHEMAS[name]
    if set(columns) != set(schema.names):
        raise ValueError(f"{name} takes columns {schema.names}, got {sorted(columns)}")
    arrays = [columns[f.name].cast(f.type) if isinstance(columns[f.name], pa.Array)
              else pa.array(columns[f.name], f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _per_feature(n_features: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(feature, slot) of k rows per feature, feature-major."""
    return np.repeat(np.arange(n_features), k), np.tile(np.arange(k), n_features)


def synthetic_feature_tables(n_features: int, *, seed: int = 0, n_top: int = 20, n_bands: int = 10,
                             per_band: int = 5, n_bins: int = 20, n_logits: int = 10, n_neighbors: int = 10,
                             mp_steps: int = 0, dead_every: int = 17, vocab: Sequence[str] = REPORT_VOCAB,
                             corpus: str = REPORT_CORPUS, n_contexts: int = REPORT_N_CONTEXTS,
                             ctx_len: int = REPORT_CTX_LEN, window: int = 17, n_tokens: int = 400_000,
                             columns: Mapping[str, Mapping[str, object]] | None = None) -> dict[str, pa.Table]:
    """Synthetic results of one dictionary shaped like a real analysis, built column-wise (50,000 features in
    seconds). Values are random (from `seed`) unless `columns` sets them.

    Rows, feature-major: features one per feature; every `dead_every`-th feature (0 first) is dead, with
    count 0 and no examples or histogram (0: none dead). feature_examples: n_top top examples, then
    n_bands * per_band quantile ones (strongest band first); windows of `window` activations in contexts
    0..n_contexts-1 of ctx_len tokens. feature_histograms: n_bins log-spaced bins. feature_logits: n_logits
    promoted then n_logits suppressed tokens of `vocab` (token text follows token_id). feature_neighbors:
    n_neighbors decoder then n_neighbors co-occurrence. mp_steps / mp_parents: mp_steps rows each (0: none).
    columns: table -> column -> a value for every row (a scalar) or one per row in the order above.
    """
    vocab = np.asarray(vocab, dtype=object)
    rng = np.random.default_rng(seed)
    n = n_features
    count = rng.integers(1, 20_000, n)
    if dead_every:
        count[::dead_every] = 0  # a few dead features, as in any real dictionary
    max_act = np.where(count > 0, rng.gamma(2.0, 2.0, n) + 0.5, 0.0)
    live = count > 0
    raw = {"features": dict(feature=np.arange(n), count=count, density=count / n_tokens, mean_act=max_act * 0.3,
                            max_act=max_act, decoder_norm=rng.normal(1, 0.05, n), max_decoder_cos=rng.random(n))}
    examples = _examples(rng, max_act, n_top, n_bands, per_band, corpus, n_contexts, ctx_len, window)
    raw["feature_examples"] = {name: values[live[examples["feature"]]] for name, values in examples.items()}
    f, b = _per_feature(n, n_bins)
    f, b = f[live[f]], b[live[f]]
    lo = np.exp(np.log(1e-2) + b * 0.25)
    raw["feature_histograms"] = dict(feature=f, bin=b, bin_lo=lo, bin_hi=lo * np.exp(0.25),
                                     count=rng.integers(1, 500, len(f)))
    f, r = _per_feature(n, 2 * n_logits)
    raw["feature_logits"] = dict(feature=f, sign=np.where(r < n_logits, 1, -1), rank=r % n_logits,
                                 token_id=rng.integers(1, len(vocab), len(f)), token=None,
                                 value=np.where(r < n_logits, 1.0, -1.0) * (2.0 - 0.1 * (r % n_logits)))
    f, r = _per_feature(n, 2 * n_neighbors)
    raw["feature_neighbors"] = dict(feature=f, kind=np.where(r < n_neighbors, "decoder", "cooccurrence"),
                                    rank=r % n_neighbors, other=(f + 1 + r) % n, score=0.9 - 0.04 * (r % n_neighbors))
    if mp_steps:
        f, s = _per_feature(n, mp_steps)
        raw["mp_steps"] = dict(feature=f, step=s, count=rng.integers(0, 100, len(f)))
        raw["mp_parents"] = dict(feature=f, rank=s, parent=(f + 7 * (s + 1)) % n, count=40 - 5 * s)
    return _typed(raw, columns or {}, vocab)


def _typed(raw: dict[str, dict], columns: Mapping[str, Mapping[str, object]], vocab: np.ndarray) -> dict[str, pa.Table]:
    """The tables of `raw` with `columns` set, token text from token ids, example windows as Arrow lists."""
    for name, given in columns.items():
        rows = len(raw[name]["feature"])
        raw[name].update({column: value if isinstance(value, list) or np.ndim(value) > 1  # ragged, windows
                          else np.broadcast_to(value, (rows,)) for column, value in given.items()})
    logits = raw["feature_logits"]
    if logits["token"] is None:
        logits["token"] = vocab[logits["token_id"]]
    examples = raw["feature_examples"]
    if isinstance(examples["token_acts"], np.ndarray):  # (rows, window) -> one list per row
        acts = np.ascontiguousarray(examples["token_acts"], np.float32)
        examples["token_acts"] = pa.ListArray.from_arrays(
            pa.array(np.arange(len(acts) + 1) * acts.shape[1], pa.int32()), acts.reshape(-1))
    return {name: feature_table(name, values) for name, values in raw.items()}


def _examples(rng, max_act: np.ndarray, n_top: int, n_bands: int, per_band: int, corpus: str, n_contexts: int,
              ctx_len: int, window: int) -> dict[str, np.ndarray]:
    """Example columns for every feature: activations peak at the window's middle, below the feature's max."""
    slots = n_top + n_bands * per_band
    feature, slot = _per_feature(len(max_act), slots)
    top = slot < n_top
    band = np.where(top, -1, n_bands - 1 - (slot - n_top) // per_band)
    rank = np.where(top, slot, (slot - n_top) % per_band)
    peak_frac = np.where(top, 1.0 - 0.02 * slot, (band + rng.random(len(slot))) / n_bands)
    activation = (max_act[feature] * np.clip(peak_frac, 0.01, 1.0)).astype(np.float32)
    position = rng.integers(window // 2, ctx_len - window // 2, len(feature))
    acts = rng.random((len(feature), window), dtype=np.float32) * activation[:, None] * 0.6
    acts[rng.random(acts.shape) < 0.6] = 0.0
    acts[:, window // 2] = activation
    return dict(feature=feature, kind=np.where(top, "top", "quantile"), band=np.where(top, None, band), rank=rank,
                corpus=np.full(len(feature), corpus, dtype=object),
                context_id=rng.integers(0, n_contexts, len(feature)), position=position, activation=activation,
                window_start=position - window // 2, token_acts=acts)


# ------------------------------------------------------------------------------------------- the report store



def build_report_store(con, n_features: int = 48, per_band: int = 5, seed: int = 0, path_root: str = "/nowhere",
                       labels: bool = True) -> None:
    """Fill `con` (a migrated store) with a synthetic, demo-shaped workspace for report tests and
    bench/report.py: REPORT_DICTIONARIES (TopK, MP, codebook, attention output) on REPORT_VOCAB, each
    analysed by synthetic_feature_tables (20 top examples, 10 bands x per_band quantile ones); REPORT_LABELS;
    head scores and head attribution for attn-demo; two steering runs. 1,000 features take about a second."""
    from store import dictionaries as dict_repo
    from store.features import write_feature_stats

    rng = np.random.default_rng(seed)
    _report_corpus(con, rng)
    for i, (name, (arch, hook, fvu, l0)) in enumerate(REPORT_DICTIONARIES.items()):
        dict_repo.add_dictionary(con, dict_repo.DictionaryRow(name, REPORT_MODEL, hook, arch, 64, n_features, 8,
                                                              f"{path_root}/dictionaries/{name}"))
        codes = {"code_usage": 0.6, "code_perplexity": 40.0} if arch == "codebook" else {}  # as evaluation stores
        dict_repo.set_metrics(con, name, {"fvu": fvu, "l0": l0, "dead": 0.05, "ce_recovered": 0.9 - fvu} | codes)
        tables = synthetic_feature_tables(n_features, seed=seed + i, per_band=per_band,
                                          mp_steps=4 if arch == "mp" else 0)
        write_feature_stats(con, name, REPORT_CORPUS, tables, n_tokens=400_000)
    if _has(con, "head_stats"):  # stores from before the heads and steering migrations lack these parts
        _report_heads(con, n_features)
    if _has(con, "steering_runs"):
        _report_steering(con)
    if labels:
        for feature, label, notes in REPORT_LABELS:
            con.execute("INSERT INTO feature_labels (dictionary, feature, label, notes) VALUES ('topk-demo', ?, ?, ?)",
                        [feature, label, notes])


def _report_corpus(con, rng) -> None:
    from store.features import write_vocab

    con.execute("INSERT INTO models (name, n_layers, d_model, n_params, d_vocab) VALUES (?, 2, 64, 1000, ?)",
                [REPORT_MODEL, len(REPORT_VOCAB)])
    con.execute("INSERT INTO corpora (name, model, source, ctx, bos, n_contexts, n_tokens) "
                "VALUES (?, ?, 'synthetic', ?, true, ?, ?)",
                [REPORT_CORPUS, REPORT_MODEL, REPORT_CTX_LEN, REPORT_N_CONTEXTS, REPORT_CTX_LEN * REPORT_N_CONTEXTS])
    ids = rng.integers(1, len(REPORT_VOCAB), (REPORT_N_CONTEXTS, REPORT_CTX_LEN)).astype(np.int32)
    con.register("_ctx", pa.table({"context_id": pa.array(np.arange(REPORT_N_CONTEXTS), pa.int32()),
                                   "token_ids": pa.array(list(ids), pa.list_(pa.int32())),
                                   "text": pa.array(["".join(REPORT_VOCAB[t] for t in row) for row in ids])}))
    con.execute("INSERT INTO contexts SELECT ?, context_id, token_ids, text FROM _ctx", [REPORT_CORPUS])
    con.unregister("_ctx")
    write_vocab(con, REPORT_MODEL, REPORT_VOCAB)


def _has(con, table: str) -> bool:
    return con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]).fetchone()[0] > 0


def _report_steering(con) -> None:
    """Two runs in the stored layout: one on feature 1 of topk-demo, one on feature 30."""
    for feature, strength in ((1, 4.0), (30, -2.0)):
        config = {"prompt": "Tell me about <pets> & friends", "model": REPORT_MODEL, "chat": True,
                  "max_new_tokens": 8, "samples": 2, "seed": 0, "temperature": 0.7, "top_p": 0.9,
                  "interventions": [{"mode": "add", "dictionary": "topk-demo", "feature": feature,
                                     "strength": strength, "positions": "all", "value": None, "trigger": None}]}
        measures = {"kl_mean": 0.4, "kl_per_position": [0.1, 0.3, 0.5, 0.7], "perplexity_steered": 12.5,
                    "perplexity_default": 9.0, "targets": [{"label": f"topk-demo:{feature}",
                                                            "steered": {"mean": 2.0, "max": 3.5, "fired": 0.8},
                                                            "default": {"mean": 0.1, "max": 0.9, "fired": 0.1}}]}
        con.execute("INSERT INTO steering_runs (model, dictionary, config, default_texts, steered_texts, measures) "
                    "VALUES (?, 'topk-demo', ?, ?, ?, ?)",
                    [REPORT_MODEL, json.dumps(config), ["The cat sat.", "A dog ran."],
                     ["Cats, cats <everywhere>!", "Dogs & cats."], json.dumps(measures)])


def _report_heads(con, n_features: int) -> None:
    con.execute("INSERT INTO head_runs (model, corpus, n_layers, n_heads, n_kv_heads, n_contexts, n_tokens) "
                "VALUES (?, ?, 2, 4, 2, ?, ?)",
                [REPORT_MODEL, REPORT_CORPUS, REPORT_N_CONTEXTS, REPORT_CTX_LEN * REPORT_N_CONTEXTS])
    for layer in range(2):
        for head in range(4):
            for score in ("prev_token", "induction", "entropy"):
                con.execute("INSERT INTO head_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            [REPORT_MODEL, REPORT_CORPUS, layer, head, head // 2, score, (layer * 4 + head) / 8,
                             6400])
    weights = np.random.default_rng(3).dirichlet(np.ones(4), n_features)
    con.register("_heads", pa.table({"feature": pa.array(np.repeat(np.arange(n_features), 4), pa.int32()),
                                     "head": pa.array(np.tile(np.arange(4), n_features), pa.int16()),
                                     "weight": pa.array(weights.reshape(-1), pa.float32())}))
    con.execute("INSERT INTO feature_heads SELECT 'attn-demo', feature, head, weight FROM _heads")
    con.unregister("_heads")


# ------------------------------------------------------------------------------------------- planted features

def planted_examples(ids: np.ndarray, tokens: Sequence[int], n_examples: int = 30, window: int = 17, seed: int = 0,
                     corpus: str = REPORT_CORPUS) -> pa.Table:
    """feature_examples in which feature f fires exactly on token tokens[f] of the contexts `ids` (n_contexts,
    ctx_len), nowhere else: up to n_examples windows around its occurrences at positions >= 1 (the first half top
    examples, the rest spread over bands 9..0), with the activation on every occurrence inside the window.
    tokens[f] < 0: no examples (a dead feature)."""
    rng = np.random.default_rng(seed)
    cols = {name: [] for name in RESULT_SCHEMAS["feature_examples"].names}
    half = window // 2
    for feature, token in enumerate(tokens):
        ctx, pos = np.nonzero(ids == token) if token >= 0 else (np.zeros(0, int), np.zeros(0, int))
        ctx, pos = ctx[pos >= 1], pos[pos >= 1]
        for rank, i in enumerate(rng.permutation(len(ctx))[:n_examples]):
            start = int(max(0, min(pos[i] - half, ids.shape[1] - window)))
            act = float(1.0 + rng.random())
            top = rank < n_examples // 2
            values = dict(feature=feature, kind="top" if top else "quantile", band=None if top else 9 - rank % 10,
                          rank=rank if top else rank // 10, corpus=corpus, context_id=int(ctx[i]),
                          position=int(pos[i]), activation=act, window_start=start,
                          token_acts=np.where(ids[ctx[i], start:start + window] == token, act, 0.0).tolist())
            for name, value in values.items():
                cols[name].append(value)
    return feature_table("feature_examples", cols)


def planted_dictionary(con, name: str = "planted", n_features: int = 24, dead: Sequence[int] = (0,),
                       seed: int = 0) -> dict[int, int]:
    """Analyse a dictionary `name` on the report store's corpus (build_report_store first) whose live feature f
    fires exactly on token id 1 + f % (vocabulary - 1); the features in `dead` never fire. Returns feature ->
    token id of the live ones. Labels are left alone."""
    from store.features import write_feature_stats

    rows = con.execute("SELECT token_ids FROM contexts WHERE corpus = ? ORDER BY context_id",
                       [REPORT_CORPUS]).fetchall()
    ids = np.array([r[0] for r in rows], np.int64)
    tokens = [-1 if f in dead else 1 + f % (len(REPORT_VOCAB) - 1) for f in range(n_features)]
    tables = synthetic_feature_tables(n_features, seed=seed, dead_every=0,
                                      columns={"features": {"count": [0 if t < 0 else 100 for t in tokens]}})
    tables["feature_examples"] = planted_examples(ids, tokens, seed=seed)
    write_feature_stats(con, name, REPORT_CORPUS, tables, n_tokens=int(ids.size))
    return {f: t for f, t in enumerate(tokens) if t >= 0}


def token_windows(ids: Sequence[Sequence[int]], acts: Sequence[Sequence[float]] | None = None,
                  before: Sequence[int] | None = None, context_ids: Sequence[int] | None = None,
                  starts: Sequence[int] | None = None):
    """analysis.explain Windows, one per list of token ids: activations `acts` (zeros when None), window w from
    context context_ids[w] (default 1000 + w) at position starts[w] (default 1), the token before it before[w]
    (default -1, a context's start)."""
    from analysis.explain.evidence import Windows

    n = len(ids)
    acts = acts if acts is not None else [[0.0] * len(w) for w in ids]
    before = before if before is not None else [-1] * n
    flat = np.array([t for w in ids for t in w], np.int64)
    prev = np.array([p for w, b in zip(ids, before) for p in [b, *w[:-1]]], np.int64)
    return Windows(flat, prev, np.array([a for w in acts for a in w], np.float32),
                   np.concatenate([[0], np.cumsum([len(w) for w in ids])]).astype(np.int64),
                   np.asarray(context_ids if context_ids is not None else range(1000, 1000 + n), np.int64),
                   np.asarray(starts if starts is not None else [1] * n, np.int64), np.full(n, -1, np.int64))


def explained_workspace(root: Path) -> Path:
    """A workspace folder at `root` whose store holds build_report_store (48 features) and planted_dictionary
    ("planted", 24 features, feature 0 dead), nothing explained yet."""
    from store import connect

    root.mkdir(parents=True, exist_ok=True)
    con = connect(root / "sparsescope.duckdb")
    try:
        build_report_store(con)
        planted_dictionary(con)
    finally:
        con.close()
    return root


def kill_training_at(monkeypatch, step: int) -> None:
    """Make training raise KeyboardInterrupt (as Ctrl+C would) when it reaches `step`, before that step runs;
    `monkeypatch.undo()` lets the next run train normally."""
    import sae.dictionaries as dictionaries
    from sae.dictionaries.step import train_step

    def killed(sae, batch, optimizer, at, total_steps):
        if at == step:
            raise KeyboardInterrupt
        return train_step(sae, batch, optimizer, at, total_steps)

    monkeypatch.setattr(dictionaries, "train_step", killed)


# ------------------------------------------------------------------------------------------- search by text

SEARCH_DICTIONARIES = (  # name, arch, hook, d_sae, k: every hook of tiny-random gives 64 numbers a token
    ("res0-topk", "topk", "blocks.0.hook_resid_post", 128, 4),
    ("res0-mp", "mp", "blocks.0.hook_resid_post", 96, 3),
    ("res0-codebook", "codebook", "blocks.0.hook_resid_post", 64, 2),
    ("z0-topk", "topk", "blocks.0.attn.hook_z", 128, 4),
    ("res1-relu", "relu", "blocks.1.hook_resid_pre", 128, None),
)
SEARCH_ANALYSED = "res0-topk"
"""The one dictionary of search_workspace with an analysis: density (f + 1) / 1000 and label "feature f"."""


def search_workspace(ws) -> None:
    """Save and record SEARCH_DICTIONARIES in workspace `ws` (weights from seed 0), analyse SEARCH_ANALYSED."""
    import torch

    from store import session
    from store.dictionaries import DictionaryRow, add_dictionary
    from store.features import write_feature_stats
    from store.queries import set_label

    torch.manual_seed(0)
    with session(ws.db_path) as con:
        for name, arch, hook, d_sae, k in SEARCH_DICTIONARIES:
            folder = saved_dictionary(ws.dictionaries_dir / name, arch=arch, d_sae=d_sae, k=k, hook_name=hook)
            add_dictionary(con, DictionaryRow(name, TINY_MODEL, hook, arch, TINY_D_MODEL, d_sae, k, str(folder)))
        n = dict((d[0], d[3]) for d in SEARCH_DICTIONARIES)[SEARCH_ANALYSED]
        ids = np.arange(n)
        features = feature_table("features", dict(feature=ids, count=ids + 1, density=(ids + 1) / 1000,
                                                  mean_act=np.ones(n), max_act=np.full(n, 2.0),
                                                  decoder_norm=np.ones(n), max_decoder_cos=np.zeros(n)))
        write_feature_stats(con, SEARCH_ANALYSED, "none", {"features": features}, n_tokens=1000, model=TINY_MODEL)
        for feature in range(n):
            set_label(con, SEARCH_ANALYSED, feature, f"feature {feature}")
