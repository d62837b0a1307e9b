"""Turn the results of a feature-statistics pass into the Arrow tables `store.features` writes.

Tables carry no `dictionary` column: the store adds it, so analysis never needs the dictionary's name.
Every table is built column-wise from numpy arrays (no Python loop over features).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa

from analysis.features.pursuit import MPStats
from analysis.features.stats import ExampleArrays, FeatureStats

Pair = tuple[np.ndarray, np.ndarray]


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def feature_tables(stats: FeatureStats, corpus: str, *, decoder_norm=None, neighbors: Pair | None = None,
                   logits: tuple | None = None, vocab: Sequence[str] | None = None,
                   mp: MPStats | None = None) -> dict[str, pa.Table]:
    """All tables of one analysis. Optional parts: decoder_norm [d_sae]; neighbors = decoder_neighbors(...);
    logits = logit_effects(...) with vocab[token_id] -> token text; mp = MPStepAccumulator.finish()."""
    d_sae = len(stats.count)
    cos = _np(neighbors[1]) if neighbors is not None else np.zeros((d_sae, 0))
    max_cos = cos[:, 0].astype(np.float64) if cos.shape[1] else np.full(d_sae, np.nan)
    norms = _np(decoder_norm).astype(np.float64) if decoder_norm is not None else np.full(d_sae, np.nan)
    tables = {
        "features": pa.table({
            "feature": pa.array(np.arange(d_sae), pa.int32()),
            "count": pa.array(stats.count, pa.int64()),
            "density": pa.array(stats.density, pa.float64()),
            "mean_act": pa.array(stats.mean_act, pa.float64()),
            "max_act": pa.array(stats.max_act, pa.float64()),
            "decoder_norm": pa.array(norms, pa.float64(), from_pandas=True),
            "max_decoder_cos": pa.array(max_cos, pa.float64(), from_pandas=True),
        }),
        "feature_histograms": _histograms(stats),
        "feature_examples": pa.concat_tables([
            _examples(stats.top, "top", corpus), _examples(stats.quantiles, "quantile", corpus)]),
    }
    neighbor_parts = []
    if neighbors is not None:
        neighbor_parts.append(_ranked("decoder", *neighbors))
    if stats.cooc_ids is not None:
        neighbor_parts.append(_ranked("cooccurrence", stats.cooc_ids, stats.cooc_jaccard))
    if neighbor_parts:
        tables["feature_neighbors"] = pa.concat_tables(neighbor_parts)
    if logits is not None:
        tables["feature_logits"] = _logits(logits, vocab)
    if mp is not None:
        tables.update(_mp_tables(mp))
    return tables


def _histograms(stats: FeatureStats) -> pa.Table:
    feature, bin_ = np.nonzero(stats.hist_count > 0)
    return pa.table({
        "feature": pa.array(feature, pa.int32()),
        "bin": pa.array(bin_, pa.int16()),
        "bin_lo": pa.array(stats.hist_lo[feature, bin_], pa.float64()),
        "bin_hi": pa.array(stats.hist_hi[feature, bin_], pa.float64()),
        "count": pa.array(stats.hist_count[feature, bin_], pa.int64()),
    })


def _examples(ex: ExampleArrays, kind: str, corpus: str) -> pa.Table:
    """One row per filled slot; slots are [d_sae, n] (top) or [d_sae, Q, n] (quantile bands)."""
    idx = np.nonzero(ex.context_id >= 0)
    feature, rank = idx[0], idx[-1]
    band = idx[1] if len(idx) == 3 else None
    n = len(feature)
    return pa.table({
        "feature": pa.array(feature, pa.int32()),
        "kind": _repeat(kind, n),
        "band": pa.array(band, pa.int16()) if band is not None else pa.nulls(n, pa.int16()),
        "rank": pa.array(rank, pa.int16()),
        "corpus": _repeat(corpus, n),
        "context_id": pa.array(ex.context_id[idx], pa.int32()),
        "position": pa.array(ex.position[idx], pa.int32()),
        "activation": pa.array(ex.activation[idx], pa.float32()),
        "window_start": pa.array(ex.window_start[idx], pa.int32()),
        "token_acts": _token_acts(ex.windows),
    })


def _repeat(text: str, n: int) -> pa.Array:
    """One string n times, without a Python list of n references (millions of rows at 65k features)."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), pa.array([text])).cast(pa.string())


def _token_acts(windows: np.ndarray) -> pa.Array:
    """[M, W] windows as lists, dropping the NaN tail of windows in contexts shorter than W."""
    nan = np.isnan(windows)
    if not nan.any():  # the usual case: fixed-size lists over the windows' own buffer, no copy
        offsets = np.arange(len(windows) + 1, dtype=np.int32) * windows.shape[1]
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(windows.reshape(-1), pa.float32()))
    offsets = np.concatenate([[0], np.cumsum((~nan).sum(axis=1))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(windows[~nan], pa.float32()))


def _ranked(kind: str, ids, scores) -> pa.Table:
    ids, scores = _np(ids), _np(scores)
    feature, rank = np.nonzero(ids >= 0)
    return pa.table({
        "feature": pa.array(feature, pa.int32()),
        "kind": pa.array([kind] * len(feature), pa.string()),
        "rank": pa.array(rank, pa.int16()),
        "other": pa.array(ids[feature, rank], pa.int32()),
        "score": pa.array(scores[feature, rank].astype(np.float64), pa.float64()),
    })


def _logits(logits: tuple, vocab: Sequence[str] | None) -> pa.Table:
    parts = []
    for sign, ids, vals in ((1, logits[0], logits[1]), (-1, logits[2], logits[3])):
        ids, vals = _np(ids), _np(vals)
        feature, rank = np.indices(ids.shape).reshape(2, -1)
        token_ids = ids.reshape(-1)
        tokens = [vocab[t] for t in token_ids.tolist()] if vocab is not None else None
        parts.append(pa.table({
            "feature": pa.array(feature, pa.int32()),
            "sign": pa.array(np.full(len(feature), sign), pa.int8()),
            "rank": pa.array(rank, pa.int16()),
            "token_id": pa.array(token_ids, pa.int32()),
            "token": pa.array(tokens, pa.string()) if tokens is not None else pa.nulls(len(feature),
                                                                                          pa.string()),
            "value": pa.array(vals.reshape(-1).astype(np.float64), pa.float64()),
        }))
    return pa.concat_tables(parts)


def _mp_tables(mp: MPStats) -> dict[str, pa.Table]:
    feature, step = np.nonzero(mp.step_counts)
    child, rank = np.nonzero(mp.parent_ids >= 0)
    return {
        "mp_steps": pa.table({
            "feature": pa.array(feature, pa.int32()),
            "step": pa.array(step, pa.int16()),
            "count": pa.array(mp.step_counts[feature, step], pa.int64()),
        }),
        "mp_parents": pa.table({
            "feature": pa.array(child, pa.int32()),
            "rank": pa.array(rank, pa.int16()),
            "parent": pa.array(mp.parent_ids[child, rank], pa.int32()),
            "count": pa.array(mp.parent_counts[child, rank], pa.int64()),
        }),
    }
