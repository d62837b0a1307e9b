"""The feature page's block of what SAEDashboard shows beyond the stored statistics: the histogram of the
decoder's logit effects over the whole vocabulary, the neuron alignment of the decoder row, and a top example's
whole context with per-token activations.

    dashboard_parity_block(page, feature)     # once, on the feature page, after the explanation and DFA blocks

All of it is computed on request (app/ui/data/parity.py says why). The whole context is the `context` query
parameter (the example's rank among the top examples), so it can be shared as a link.
"""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.ui.data import cache
from app.ui.data import dfa as dfa_data
from app.ui.data import parity as data
from app.ui.widgets.common import int_param, md_escape, tokens_html, visible
from store.errors import InputError

CONTEXT_PARAM = "context"
"""Query parameter: rank of the top example whose whole context is shown."""
VOCAB_PARAM = "vocab"
"""Query parameter: `1` shows the logit-effect histogram (it needs the model's unembedding: loading the model
would make every feature page's first view seconds slower, so it is drawn on request)."""


def vocab_histogram_figure(vh: data.VocabHistogram) -> go.Figure:
    """Tokens per logit-effect bin as a step line (as the activation histogram), the most promoted and
    suppressed tokens marked on the axis."""
    hist = vh.hist
    fig = go.Figure(go.Scatter(x=hist.edges, y=np.append(hist.counts, hist.counts[-1]), line_shape="hv",
                               fill="tozeroy", mode="lines", name="tokens", line_color="#6b7280",
                               hovertemplate="from %{x:.4g}: %{y} tokens<extra></extra>"))
    for name, ids, values, texts, colour in (
            ("promoted", hist.top_ids, hist.top_values, vh.top_tokens, "#2563eb"),
            ("suppressed", hist.bottom_ids, hist.bottom_values, vh.bottom_tokens, "#dc2626")):
        fig.add_trace(go.Scatter(
            x=values, y=np.zeros(len(values)), mode="markers", name=name,
            marker=dict(color=colour, size=14, symbol="line-ns-open", line_width=2),
            customdata=np.stack([np.array([html.escape(visible(t)) for t in texts], dtype=object), ids], axis=-1),
            hovertemplate="%{customdata[0]} (id %{customdata[1]}): %{x:+.4f}<extra>" + name + "</extra>"))
    fig.update_layout(xaxis_title="logit effect (W_dec \u00b7 W_U)", yaxis_title="tokens", height=300,
                      margin=dict(t=10, b=10), legend=dict(orientation="h", y=1.1))
    return fig


def dashboard_parity_block(page, feature: int) -> None:
    """Logit-effect histogram, neuron alignment and whole contexts of one feature; a caption where the
    dictionary's row (its model, hook or weights) is missing."""
    row = page.dictionary
    st.subheader("Logit effects over the whole vocabulary")
    if row is None or not row.model:
        st.caption("needs the dictionary's model and weights")
        return
    _vocab_section(row, feature)
    st.subheader("Neuron alignment")
    _alignment_section(page, row, feature)
    st.subheader("Whole context of a top example")
    _context_section(page, row, feature)


def _vocab_section(row, feature: int) -> None:
    asked = st.query_params.get(VOCAB_PARAM) == "1"
    shown = st.toggle("show (loads the model's unembedding)", value=asked, key=f"parity-vocab-{row.name}-{feature}")
    if shown != asked:
        if shown:
            st.query_params[VOCAB_PARAM] = "1"
        else:
            st.query_params.pop(VOCAB_PARAM, None)
    if not shown:
        return
    vh = data.vocab_histogram(row.model, row.name, row.path, row.hook, feature)
    if vh is None:
        st.caption("not available: the weights are missing, or the hook has no linear path to the unembedding")
        return
    st.plotly_chart(vocab_histogram_figure(vh), width="stretch", key=f"parity-logits-{row.name}-{feature}")
    st.caption(f"the direct effect of the decoder direction on every one of the {int(vh.hist.counts.sum()):,} "
               "tokens' logits (through the final norm's weight, as the logit effects above); ticks mark the "
               f"{len(vh.top_tokens)} most promoted and suppressed")


def _alignment_section(page, row, feature: int) -> None:
    found = data.alignment(row.name, row.path, feature)
    if found is None:
        st.caption("needs the dictionary's weights on disk")
        return
    dims, values, shares = found
    unit = "neuron" if row.hook.endswith(("mlp.hook_post", "mlp.hook_pre")) else "dimension"
    table = {unit: dims.tolist(), "decoder weight": values.tolist(), "% of L1": (100 * shares).tolist()}
    examples = page.card.top_examples
    if examples and st.toggle("correlation over the top examples' windows (runs the model)",
                              key=f"parity-corr-{row.name}-{feature}"):
        correlations = data.window_correlations(row.model, row.name, row.path, row.hook,
                                                _windows(examples), feature, tuple(int(d) for d in dims))
        if correlations is not None:
            table["correlation"] = correlations.tolist()
    st.table(pd.DataFrame(table).round(4))
    hook_z = " (hook_z: head-major, head = dimension // d_head)" if row.hook.endswith("attn.hook_z") else ""
    st.caption(f"the {unit}s of {md_escape(row.hook)}{hook_z} the feature writes most: the largest |W_dec| "
               "entries and their share of the decoder row's L1 norm")


def _windows(examples) -> tuple:
    """(context token ids, window start, window length) of every top example whose context is stored."""
    found = []
    for e in examples:
        token_ids = cache.fetch(dfa_data.context, e.corpus, e.context_id)
        if token_ids:
            found.append((token_ids, e.window_start, len(e.token_acts)))
    return tuple(found)


def _asked_example(n_examples: int) -> int | None:
    """The `context` query parameter, checked; raises InputError."""
    asked = int_param(CONTEXT_PARAM, st.query_params.get(CONTEXT_PARAM))
    if asked is not None and asked >= n_examples:
        raise InputError(f"context example {asked} is out of range: this feature has top examples "
                         f"0..{n_examples - 1}" if n_examples else f"context example {asked}: no top examples")
    return asked


def _context_section(page, row, feature: int) -> None:
    examples = page.card.top_examples
    try:
        asked = _asked_example(len(examples))
    except InputError as exc:
        st.error(md_escape(str(exc)))
        return
    if not examples:
        st.caption("no top examples stored")
        return
    choice = st.segmented_control(
        "whole context of top example", range(len(examples)), default=asked, format_func=lambda i: f"#{i}",
        key=f"context-of-{row.name}-{feature}-{asked}",
        help="every token of the example's stored context, coloured by the feature's activation (runs the model)")
    if choice != asked:  # the URL follows the pick, so the view can be shared
        if choice is None:
            del st.query_params[CONTEXT_PARAM]
        else:
            st.query_params[CONTEXT_PARAM] = str(choice)
    if choice is None:
        st.caption("pick a top example to read its whole context")
        return
    example = examples[choice]
    token_ids = cache.fetch(dfa_data.context, example.corpus, example.context_id)
    if not token_ids or example.position >= len(token_ids):
        st.caption("the example's context is no longer in the store")
        return
    found = data.context_activations(row.model, row.name, row.path, row.hook, token_ids, feature)
    if found is None:
        st.caption("needs the dictionary's weights on disk")
        return
    texts, acts = found
    scale = max(page.card.max_act, float(acts.max()))
    st.html(tokens_html(texts, acts, scale, mark=example.position))
    st.caption(f"{len(texts)} tokens; activation {float(acts[example.position]):.4g} at the outlined token "
               f"{example.position} (stored {example.activation:.4g}); the first token, the attention sink, is left "
               "out as in the analysis")
