"""The feature page's views that SAEDashboard shows and the store does not hold, computed on request and cached:
the histogram of the decoder's logit effects over the whole vocabulary, the neuron alignment of the decoder row
(with its correlation over the top examples), and a top example's whole context with per-token activations.

Why on request: the histogram is one [d_model] x [d_model, vocab] product per feature and the alignment one row
of W_dec, cheaper to compute than a stored table (which would need a migration) is to read; the store keeps only
a window around each example, and the whole context is one forward pass. Model work runs on the shared model
inside cache.using_model (its lock), on the dictionary from cache.dictionary (analysis.dictionaries.open_dictionary,
keyed by name + weights stamp). Every input is an argument.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

from app.ui.data import cache


@dataclass(frozen=True)
class VocabHistogram:
    """analysis.features.detail.LogitHistogram with the text of its marked tokens."""

    hist: object
    top_tokens: list[str]
    bottom_tokens: list[str]


@st.cache_data(show_spinner="computing logit effects over the vocabulary...", max_entries=128)
def _vocab_histogram(model_name: str, name: str, stamp: int, hook: str, feature: int) -> VocabHistogram | None:
    from analysis.features.analyze import residual_directions
    from analysis.features.detail import logit_histogram
    from analysis.features.weights import final_norm_map

    sae = cache.dictionary(name, stamp)
    with cache.using_model(model_name) as lm:
        directions = residual_directions(sae, lm, hook, [feature])
        if directions is None:
            return None
        hist = logit_histogram(directions[0], lm.W_U.detach(), final_norm_map(lm))
        decode = lm.tokenizer.decode
        return VocabHistogram(hist, [decode([int(t)]) for t in hist.top_ids],
                              [decode([int(t)]) for t in hist.bottom_ids])


def vocab_histogram(model_name: str, name: str, path: str, hook: str, feature: int) -> VocabHistogram | None:
    """The feature's logit effects over the whole vocabulary; None when the weights are not on disk or the hook
    has no linear path to the unembedding (q/k/v, attention scores)."""
    stamp = cache.stamp(path)
    if not stamp:
        return None
    return cache.compute(_vocab_histogram, model_name, name, stamp, hook, feature)


@st.cache_data(show_spinner=False, max_entries=256)
def _alignment(name: str, stamp: int, feature: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from analysis.features.detail import neuron_alignment

    return neuron_alignment(cache.dictionary(name, stamp).W_dec[feature])


def alignment(name: str, path: str, feature: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(dims, values, share of L1) of the decoder row's largest entries; None without the weights on disk."""
    stamp = cache.stamp(path)
    return cache.compute(_alignment, name, stamp, feature) if stamp else None


@st.cache_data(show_spinner="running the model on the context...", max_entries=64)
def _context_activations(model_name: str, name: str, stamp: int, hook: str, token_ids: tuple[int, ...],
                         feature: int) -> tuple[list[str], np.ndarray]:
    from analysis.features.detail import context_activations

    sae = cache.dictionary(name, stamp)
    with cache.using_model(model_name) as lm:
        _, feature_acts = context_activations(lm, hook, sae, token_ids)
        texts = [lm.tokenizer.decode([t]) for t in token_ids]
    return texts, feature_acts[:, feature].numpy()


def context_activations(model_name: str, name: str, path: str, hook: str, token_ids: tuple[int, ...],
                        feature: int) -> tuple[list[str], np.ndarray] | None:
    """(token texts, the feature's activation on each token) of a whole stored context; None without weights."""
    stamp = cache.stamp(path)
    if not stamp:
        return None
    return cache.compute(_context_activations, model_name, name, stamp, hook, token_ids, feature)


@st.cache_data(show_spinner="correlating over the top examples...", max_entries=64)
def _window_correlations(model_name: str, name: str, stamp: int, hook: str,
                         windows: tuple[tuple[tuple[int, ...], int, int], ...], feature: int,
                         dims: tuple[int, ...]) -> np.ndarray:
    from analysis.features.detail import context_activations, dimension_correlations

    sae = cache.dictionary(name, stamp)
    acts, feature_acts = [], []
    with cache.using_model(model_name) as lm:
        for token_ids, start, length in windows:
            x, f = context_activations(lm, hook, sae, token_ids)
            acts.append(x[start:start + length].numpy())
            feature_acts.append(f[start:start + length, feature].numpy())
    return dimension_correlations(np.concatenate(feature_acts), np.concatenate(acts), np.array(dims))


def window_correlations(model_name: str, name: str, path: str, hook: str,
                        windows: tuple[tuple[tuple[int, ...], int, int], ...], feature: int,
                        dims: tuple[int, ...]) -> np.ndarray | None:
    """Pearson correlation of the feature with each of `dims` over the tokens of the top examples' windows
    ((context token ids, window start, window length), ...); None without the weights on disk."""
    stamp = cache.stamp(path)
    if not stamp or not windows:
        return None
    return cache.compute(_window_correlations, model_name, name, stamp, hook, windows, feature, dims)
