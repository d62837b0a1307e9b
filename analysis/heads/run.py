"""A head scan from the store and back: read a corpus' contexts, scan, write the results in one transaction.

Reading and writing are separate steps so a caller can close its write connection while the model runs
(DuckDB allows one writer per file, and the UI must stay readable during a long scan).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import duckdb
import numpy as np
import pyarrow as pa
import torch
from jaxtyping import Int
from torch import Tensor

from analysis.corpora import ensure_corpus
from analysis.heads.scan import HeadScan, HeadScanConfig
from store.corpora import Corpus, context_tokens, corpus_fingerprint
from store.errors import InputError
from store.heads import HeadRun, get_head_run, save_head_scan


@dataclass(frozen=True)
class ScanInput:
    corpus: Corpus
    tokens: Int[Tensor, "n_contexts ctx"]
    context_ids: list[int]
    fingerprint: str | None = None
    """Fingerprint of the corpus read (store.corpora), recorded with the scan."""


def scan_contexts(corpus: Corpus, tokens: int) -> int:
    """Contexts a scan of `tokens` tokens reads: whole contexts, at most the corpus."""
    if tokens <= 0:
        raise InputError(f"--tokens must be positive (got {tokens})")
    return min(-(-tokens // corpus.ctx), corpus.n_contexts)


def load_scan_input(con: duckdb.DuckDBPyConnection, model, corpus_name: str, tokens: int) -> ScanInput:
    """The first contexts of `corpus_name` (made for `model`; `builtin` is created on first use)."""
    if tokens <= 0:
        raise InputError(f"--tokens must be positive (got {tokens})")
    corpus = ensure_corpus(con, corpus_name, model.cfg.model_name, tokens)
    if corpus.ctx > model.cfg.n_ctx:
        raise InputError(f"corpus contexts ({corpus.ctx} tokens) exceed the model's context ({model.cfg.n_ctx})")
    n = scan_contexts(corpus, tokens)
    ids = context_tokens(con, corpus.name, 0, n)
    return ScanInput(corpus, torch.tensor(ids, dtype=torch.long), list(range(n)), corpus_fingerprint(con, corpus.name))


def current_scan(con: duckdb.DuckDBPyConnection, model: str, corpus: str) -> HeadRun | None:
    """The stored scan of (model, corpus) if it was made on the text the corpus holds now, else None."""
    run = get_head_run(con, model, corpus)
    if run is None or run.corpus_fingerprint is None or run.corpus_fingerprint != corpus_fingerprint(con, corpus):
        return None
    return run


def stored_scan(con: duckdb.DuckDBPyConnection, model: str, corpus: str, tokens: int) -> HeadRun | None:
    """The current scan of (model, corpus) if it covers at least `tokens` (or the whole corpus), else None."""
    run = current_scan(con, model, corpus)
    if run is None:
        return None
    row = con.execute("SELECT n_tokens FROM corpora WHERE name = ?", [corpus]).fetchone()
    wanted = min(tokens, row[0]) if row else tokens
    return run if run.n_tokens >= wanted else None


def scan_tables(scan: HeadScan) -> dict[str, pa.Table]:
    """Arrow tables for store.heads.save_head_scan."""
    n_layers, n_heads = scan.scores["prev_token"].shape
    layer, head = (a.ravel() for a in np.meshgrid(np.arange(n_layers), np.arange(n_heads), indexing="ij"))
    group = head // (n_heads // scan.n_kv_heads)
    names = list(scan.scores)
    stats = pa.table({
        "layer": np.tile(layer, len(names)).astype(np.int16), "head": np.tile(head, len(names)).astype(np.int16),
        "kv_group": np.tile(group, len(names)).astype(np.int16),
        "score": np.repeat(names, layer.size),
        "value": np.concatenate([scan.scores[n].ravel() for n in names]).astype(np.float64),
        "n_tokens": np.repeat([scan.counts[n] for n in names], layer.size).astype(np.int64),
    })
    keep = scan.top_context >= 0  # (layer, head, rank): fewer contexts than n_examples leave empty slots
    idx = np.nonzero(keep)
    examples = pa.table({
        "layer": idx[0].astype(np.int16), "head": idx[1].astype(np.int16), "rank": idx[2].astype(np.int16),
        "context_id": scan.top_context[idx].astype(np.int32), "score": scan.top_score[idx].astype(np.float32),
        "peak_weight": pa.array(list(scan.top_weight[idx].astype(np.float32)), pa.list_(pa.float32())),
        "peak_src": pa.array(list(scan.top_src[idx].astype(np.int32)), pa.list_(pa.int32())),
    })
    means = pa.table({
        "layer": layer.astype(np.int16), "head": head.astype(np.int16),
        "mean_z": pa.array(list(scan.mean_z.reshape(layer.size, -1).astype(np.float32)), pa.list_(pa.float32())),
    })
    return {"head_stats": stats, "head_examples": examples, "head_means": means}


def save_scan(con: duckdb.DuckDBPyConnection, scan: HeadScan, corpus: str, fingerprint: str | None = None) -> HeadRun:
    """Replace the stored scan of (scan.model, corpus) with `scan`; fingerprint: of the corpus the scan read
    (ScanInput.fingerprint), refused when the corpus has been replaced since."""
    n_layers, n_heads = scan.scores["prev_token"].shape
    run = HeadRun(model=scan.model, corpus=corpus, n_layers=n_layers, n_heads=n_heads,
                  n_kv_heads=scan.n_kv_heads, n_contexts=len(scan.context_ids), n_tokens=scan.n_tokens,
                  config=asdict(scan.config), corpus_fingerprint=fingerprint)
    save_head_scan(con, run, scan_tables(scan))
    return run



def load_head_means(con: duckdb.DuckDBPyConnection, model, corpus_name: str,
                    fallback_contexts: int = 32) -> np.ndarray:
    """[n_layers, n_heads, d_head] mean head outputs for mean-ablation: from the stored scan of the corpus, or
    computed now on its first `fallback_contexts` contexts when no scan of its current text is stored."""
    from analysis.heads.ablation import mean_head_outputs, means_array
    from store.heads import head_means

    name = model.cfg.model_name
    stored = means_array(model, head_means(con, name, corpus_name)) if current_scan(con, name, corpus_name) else None
    if stored is not None:
        return stored
    corpus = ensure_corpus(con, corpus_name, model.cfg.model_name, None)
    n = min(fallback_contexts, corpus.n_contexts)
    return mean_head_outputs(model, torch.tensor(context_tokens(con, corpus.name, 0, n), dtype=torch.long))


def ensure_head_scan(db_path, model, corpus_name: str, tokens: int, config: HeadScanConfig | None = None,
                     progress: bool = True) -> tuple[HeadRun, bool]:
    """The stored scan of (model, corpus) if it covers `tokens`, else a new one: (run, reused).

    Holds a write connection only to read the contexts and to write the results, not while the model runs.
    """
    from analysis.heads.scan import scan_heads
    from store import session

    with session(db_path) as con:
        run = stored_scan(con, model.cfg.model_name, corpus_name, tokens)
        if run is not None:
            return run, True
        data = load_scan_input(con, model, corpus_name, tokens)
    config = config or HeadScanConfig(tokens=tokens)
    scan = scan_heads(model, data.tokens, data.context_ids, config, progress=progress)
    with session(db_path) as con:
        return save_scan(con, scan, data.corpus.name, data.fingerprint), False
