"""A demo-sized workspace for the UI tests: the tiny random model, a small corpus and three dictionaries.

Everything goes through the store's own write functions (models, corpora, vocab, dictionaries, metrics,
write_feature_stats), so the fixture follows the schema. The numbers are real for this tiny setup: the
dictionaries are random (SAELens format, on disk, so the prompt inspector and compare can load them), the
activations come from running the tiny model over the corpus, and every table is computed from them here
with numpy (examples, histograms, logit effects, decoder and co-occurrence neighbours, MP steps and parents).

Build it without pytest (the browser test does):  python -m tests.ui_store WORKSPACE
"""
from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from tests.factories import feature_table, saved_dictionary

MODEL = "tiny-random"
HOOK = "blocks.0.hook_resid_post"
CORPUS = "demo-text"
N_CONTEXTS = 48
CTX = 48
WINDOW = 4
"""Tokens on each side of an example."""
N_TOP = 6
N_BANDS = 5
N_PER_BAND = 2
N_LOGITS = 6
N_NEIGHBORS = 6
HIST_BINS = 12


@dataclass(frozen=True)
class DictPlan:
    name: str
    arch: str
    d_sae: int
    k: int


DICTIONARIES = (DictPlan("topk-demo", "topk", 384, 12), DictPlan("mp-demo", "mp", 384, 6),
                DictPlan("codebook-demo", "codebook", 256, 4))
LABELS = {("topk-demo", 1): ("first letters", "fires on capitals"), ("mp-demo", 2): ("pursuit atom", "")}


def corpus_texts(n: int = N_CONTEXTS) -> list[str]:
    """English text that ships with Python (pydoc topics), cut into n pieces of about 3 * CTX characters."""
    from pydoc_data.topics import topics

    text = " ".join(" ".join(topics[key].split()) for key in sorted(topics))
    text = text.encode("ascii", "ignore").decode()  # the tiny model's tokens are bytes: keep one per character
    size = 3 * CTX
    return [text[i * size:(i + 1) * size] for i in range(n)]


def build(root: str | Path) -> Path:
    """Write the demo workspace under `root` (created; must not hold a store yet). Returns the workspace."""
    import torch

    from analysis.evaluate import ModelEval, activation_metrics
    from sae.dictionaries import load_dictionary
    from sae.models import load_model
    from store import Workspace, session
    from store.corpora import Corpus, save_corpus
    from store.dictionaries import DictionaryRow, add_dictionary, set_metrics
    from store.features import write_feature_stats, write_vocab
    from store.models import ModelRow, upsert_model
    from store.queries import set_label

    ws = Workspace.resolve(root)
    if ws.db_path.exists():
        raise FileExistsError(f"{ws.db_path} exists already")
    torch.manual_seed(0)
    lm = load_model(MODEL, device="cpu")
    texts = corpus_texts()
    tokens = torch.stack([lm.to_tokens(t, truncate=False)[0, :CTX] for t in texts])  # (n_ctx, CTX), BOS first
    with torch.no_grad():
        _, cache = lm.run_with_cache(tokens, names_filter=HOOK, stop_at_layer=1)
    acts = cache[HOOK].float()  # (n_ctx, CTX, d_model)
    vocab = [lm.tokenizer.decode([i]) for i in range(lm.cfg.d_vocab)]
    with session(ws.db_path) as con:
        n_params = sum(p.numel() for p in lm.parameters())
        upsert_model(con, ModelRow(MODEL, lm.cfg.n_layers, lm.cfg.d_model, n_params, lm.cfg.d_vocab))
        save_corpus(con, Corpus(CORPUS, MODEL, "pydoc topics", CTX, True, len(texts), tokens.numel()),
                    tokens.tolist(), texts)
        write_vocab(con, MODEL, vocab)
    evaluator = ModelEval(lm, HOOK, tokens[:4])
    rows = acts[:, 1:].reshape(-1, acts.shape[-1])  # metrics skip the BOS position, as training does
    for plan in DICTIONARIES:
        folder = ws.dictionaries_dir / plan.name
        saved_dictionary(folder, arch=plan.arch, d_in=lm.cfg.d_model, d_sae=plan.d_sae, k=plan.k, hook_name=HOOK,
                         model_name=MODEL)
        sae = load_dictionary(folder)
        metrics = activation_metrics(sae, rows) | evaluator.evaluate(sae)
        tables = measured_tables(sae, plan.arch, acts, tokens.numpy(), lm.W_U.detach(), vocab)
        with session(ws.db_path) as con:
            add_dictionary(con, DictionaryRow(plan.name, MODEL, HOOK, plan.arch, lm.cfg.d_model, plan.d_sae,
                                              plan.k, str(folder)))
            set_metrics(con, plan.name, metrics)
            write_feature_stats(con, plan.name, CORPUS, tables, n_tokens=int(tokens.numel()),
                                config={"fixture": "tests/ui_store.py"})
    with session(ws.db_path) as con:
        for (name, feature), (label, notes) in LABELS.items():
            set_label(con, name, feature, label, notes)
    return ws.root


# ------------------------------------------------------------------------------------------- tables

def measured_tables(sae, arch: str, acts, tokens: np.ndarray, w_u, vocab: list[str]) -> dict[str, pa.Table]:
    """Every result table of one dictionary from its activations on the corpus."""
    import torch

    from sae.dictionaries import feature_activations

    n_ctx, ctx, d_in = acts.shape
    with torch.no_grad():
        f = feature_activations(sae, acts.reshape(-1, d_in)).float().numpy()
        f = f.reshape(n_ctx, ctx, -1)  # [n_ctx, ctx, d_sae]
        f[:, 0] = 0  # the BOS position is an attention sink; the analysis pass skips it too
        w_dec = sae.W_dec.detach().float()
    d_sae = f.shape[-1]
    flat = f.reshape(-1, d_sae)
    fired = flat > 0
    count = fired.sum(axis=0)
    max_act = flat.max(axis=0)
    mean_act = np.where(count > 0, flat.sum(axis=0) / np.maximum(count, 1), 0.0)
    unit = w_dec / w_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = (unit @ unit.T).numpy()
    np.fill_diagonal(cos, -np.inf)
    dec_ids = np.argsort(-cos, axis=1)[:, :N_NEIGHBORS]
    tables = {
        "features": feature_table("features", dict(
            feature=np.arange(d_sae), count=count, density=count / flat.shape[0], mean_act=mean_act,
            max_act=max_act, decoder_norm=w_dec.norm(dim=1).numpy(),
            max_decoder_cos=np.take_along_axis(cos, dec_ids[:, :1], 1)[:, 0])),
        "feature_histograms": _histograms(flat),
        "feature_examples": _examples(f),
        "feature_logits": _logits((w_dec @ w_u.float()).numpy(), vocab),
        "feature_neighbors": pa.concat_tables([
            _ranked("decoder", dec_ids, np.take_along_axis(cos, dec_ids, 1)), _cooccurrence(fired)]),
    }
    if arch == "mp":
        tables.update(_mp_tables(sae, acts.reshape(-1, d_in)))
    return tables


def _histograms(flat: np.ndarray) -> pa.Table:
    parts = {"feature": [], "bin": [], "bin_lo": [], "bin_hi": [], "count": []}
    for feature in range(flat.shape[1]):
        values = flat[:, feature][flat[:, feature] > 0]
        if not len(values):
            continue
        lo, hi = values.min(), values.max() * (1 + 1e-6)
        edges = np.geomspace(lo, hi, HIST_BINS + 1) if hi > lo * 1.001 else np.array([lo, hi + 1e-6])
        counts, _ = np.histogram(values, edges)
        keep = np.nonzero(counts)[0]
        parts["feature"] += [feature] * len(keep)
        parts["bin"] += keep.tolist()
        parts["bin_lo"] += edges[keep].tolist()
        parts["bin_hi"] += edges[keep + 1].tolist()
        parts["count"] += counts[keep].tolist()
    return feature_table("feature_histograms", parts)


def _examples(f: np.ndarray) -> pa.Table:
    """Top examples and quantile-band samples, with each example's window of activations."""
    n_ctx, ctx, d_sae = f.shape
    flat = f.reshape(-1, d_sae)
    rows = []  # (feature, kind, band, rank, flat index)
    order = np.argsort(-flat, axis=0, kind="stable")  # (N, d_sae) strongest first
    rng = np.random.default_rng(0)
    for feature in range(d_sae):
        top = [i for i in order[:N_TOP, feature] if flat[i, feature] > 0]
        rows += [(feature, "top", None, rank, i) for rank, i in enumerate(top)]
        values = flat[:, feature]
        if not values.max() > 0:
            continue
        band = np.ceil(values / values.max() * N_BANDS).astype(int) - 1  # (b/Q, (b+1)/Q] -> b
        for b in range(N_BANDS):
            members = np.nonzero((values > 0) & (band == b))[0]
            picked = rng.permutation(members)[:N_PER_BAND]
            rows += [(feature, "quantile", b, rank, i) for rank, i in enumerate(picked)]
    index = np.array([r[4] for r in rows])
    context_id, position = index // ctx, index % ctx
    start = np.clip(position - WINDOW, 0, ctx - (2 * WINDOW + 1))
    feature = np.array([r[0] for r in rows])
    windows = [f[c, s:s + 2 * WINDOW + 1, k].tolist() for c, s, k in zip(context_id, start, feature)]
    return feature_table("feature_examples", dict(
        feature=feature, kind=[r[1] for r in rows], band=[r[2] for r in rows], rank=[r[3] for r in rows],
        corpus=[CORPUS] * len(rows), context_id=context_id, position=position, activation=flat[index, feature],
        window_start=start, token_acts=windows))


def _logits(effects: np.ndarray, vocab: list[str]) -> pa.Table:
    parts = []
    for sign in (1, -1):
        ids = np.argsort(-sign * effects, axis=1)[:, :N_LOGITS]  # (d_sae, N_LOGITS)
        feature, rank = np.indices(ids.shape).reshape(2, -1)
        token_ids = ids.reshape(-1)
        parts.append(feature_table("feature_logits", dict(
            feature=feature, sign=[sign] * len(feature), rank=rank, token_id=token_ids,
            token=[vocab[t] for t in token_ids], value=effects[feature, token_ids])))
    return pa.concat_tables(parts)


def _ranked(kind: str, ids: np.ndarray, scores: np.ndarray) -> pa.Table:
    feature, rank = np.nonzero(ids >= 0)
    return feature_table("feature_neighbors", dict(
        feature=feature, kind=[kind] * len(feature), rank=rank, other=ids[feature, rank],
        score=scores[feature, rank]))


def _cooccurrence(fired: np.ndarray) -> pa.Table:
    b = fired.astype(np.float32)
    both = b.T @ b  # (d_sae, d_sae) tokens where both fire
    count = b.sum(axis=0)
    jaccard = both / np.maximum(count[:, None] + count[None, :] - both, 1)
    np.fill_diagonal(jaccard, 0)
    ids = np.argsort(-jaccard, axis=1)[:, :N_NEIGHBORS]
    scores = np.take_along_axis(jaccard, ids, 1)
    return _ranked("cooccurrence", np.where(scores > 0, ids, -1), scores)


def _mp_tables(sae, rows) -> dict[str, pa.Table]:
    """Step at which each atom is chosen, and the atoms chosen before it on the same inputs."""
    import torch

    from sae.dictionaries import mp_encode_steps

    with torch.no_grad():
        atoms = mp_encode_steps(sae, rows).atom_ids.numpy()  # (N, steps), -1 where nothing was added
    d_sae = sae.cfg.d_sae
    steps = np.zeros((d_sae, atoms.shape[1]), np.int64)
    pairs = np.zeros((d_sae, d_sae), np.int64)  # child, parent
    for s in range(atoms.shape[1]):
        chosen = atoms[:, s]
        np.add.at(steps[:, s], chosen[chosen >= 0], 1)
        for earlier in range(s):
            ok = (chosen >= 0) & (atoms[:, earlier] >= 0) & (atoms[:, earlier] != chosen)
            np.add.at(pairs, (chosen[ok], atoms[ok, earlier]), 1)
    feature, step = np.nonzero(steps)
    parent_ids = np.argsort(-pairs, axis=1)[:, :5]
    parent_counts = np.take_along_axis(pairs, parent_ids, 1)
    child, rank = np.nonzero(parent_counts > 0)
    return {
        "mp_steps": feature_table("mp_steps", dict(feature=feature, step=step, count=steps[feature, step])),
        "mp_parents": feature_table("mp_parents", dict(feature=child, rank=rank, parent=parent_ids[child, rank],
                                                       count=parent_counts[child, rank])),
    }


# ------------------------------------------------------------------------------------------- for tests

_BUILT: dict[str, Path] = {}
MAIN = Path(__file__).resolve().parents[1] / "app" / "ui" / "main.py"
TIMEOUT_S = 120
"""Per AppTest run: the first inspector run imports TransformerLens and SAELens."""


def demo_workspace(dest: str | Path) -> Path:
    """A fresh copy of the demo workspace at `dest`, built once per process (copying takes milliseconds)."""
    if "root" not in _BUILT:
        scratch = tempfile.mkdtemp(prefix="sparsescope-ui-")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        _BUILT["root"] = build(Path(scratch) / "ws")
    dest = Path(dest)
    shutil.copytree(_BUILT["root"], dest)
    return dest


def open_page(page: str | None = None, **params):
    """An AppTest of the router that has run `page` (e.g. "views/feature.py") with query parameters."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT_S)
    if page is None and not params:
        return at.run()
    at.run()  # registers the pages, so switch_page can find them
    if page is not None:
        at.switch_page(page)
    at.query_params.clear()
    at.query_params.update({k: str(v) for k, v in params.items()})
    return at.run()


def texts(at) -> str:
    """Everything an AppTest shows as text (markdown, html, captions, messages, link labels)."""
    parts = [e.value for kind in ("markdown", "html", "caption", "error", "info", "warning", "success", "title",
                                  "subheader", "header", "text", "page_link") for e in at.get(kind)]
    return "\n".join(str(p) for p in parts)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.ui_store WORKSPACE")
    print(build(sys.argv[1]))
