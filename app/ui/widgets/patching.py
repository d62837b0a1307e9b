"""Activation patching on the heads page: the form (inputs in the URL) and the two heatmaps."""
from __future__ import annotations

import html
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from app.ui.widgets.common import md_escape, visible

KEYS = ("clean", "corrupted", "answer", "wrong")
"""Query parameters of the patching inputs."""
EXAMPLE = {"clean": "The cat sat on the mat. The cat sat on the",
           "corrupted": "The dog sat on the rug. The dog sat on the", "answer": " mat", "wrong": " rug"}


def _heatmap(z: np.ndarray, x: Sequence, xaxis: str, hover: str) -> go.Figure:
    """Layer x something heatmap of the normalised metric: 0 (corrupted) white, 1 (clean) blue, negatives red."""
    bound = max(1.0, float(np.nanmax(np.abs(z))) if z.size else 1.0)
    # lists, not arrays: the chart carries the values as numbers (plotly packs arrays as base64)
    fig = go.Figure(go.Heatmap(z=z.tolist(), x=list(x), y=list(range(z.shape[0])), colorscale="RdBu", zmid=0,
                               zmin=-bound, zmax=bound, hovertemplate=hover + "<extra></extra>"))
    fig.update_layout(xaxis_title=xaxis, yaxis_title="layer", height=max(260, 22 * z.shape[0] + 100),
                      yaxis=dict(autorange="reversed", dtick=1), margin=dict(t=10, b=10))
    return fig


def heads_figure(heads: np.ndarray) -> go.Figure:
    return _heatmap(heads, range(heads.shape[1]), "head", "layer %{y} head %{x}: %{z:.3f}")


def resid_figure(resid: np.ndarray, clean: Sequence[str], corrupted: Sequence[str]) -> go.Figure:
    """Positions labelled by their clean token (clean/corrupted where they differ), HTML-escaped for plotly."""
    labels = [f"{p}: {visible(a)}" if a == b else f"{p}: {visible(a)} / {visible(b)}"
              for p, (a, b) in enumerate(zip(clean, corrupted))]
    fig = _heatmap(resid, [html.escape(label) for label in labels], "position (clean / corrupted token)",
                   "layer %{y}, %{x}: %{z:.3f}")
    fig.update_xaxes(type="category", tickangle=-60)
    return fig


def patching_inputs(params) -> tuple[dict[str, str], bool]:
    """The form, filled from the URL (else an example); (inputs, run now): a link with every input runs at once.
    Keyed boxes: after a patch the URL, their default, changes, and an unkeyed box would be a new widget that drops
    the next edit."""
    given = all(params.get(k) for k in KEYS)
    with st.form("patching"):
        top = st.columns(2)
        clean = top[0].text_area("clean prompt", params.get("clean", EXAMPLE["clean"]), height=80, max_chars=4000,
                                key="patching-clean")
        corrupted = top[1].text_area("corrupted prompt (same number of tokens)",
                                     params.get("corrupted", EXAMPLE["corrupted"]), height=80, max_chars=4000,
                                     key="patching-corrupted")
        low = st.columns([2, 2, 1], vertical_alignment="bottom")
        answer = low[0].text_input("answer token (clean)", params.get("answer", EXAMPLE["answer"]), max_chars=100,
                                    key="patching-answer")
        wrong = low[1].text_input("wrong token (corrupted)", params.get("wrong", EXAMPLE["wrong"]), max_chars=100,
                                   key="patching-wrong")
        pressed = low[2].form_submit_button("Patch", icon=":material/swap_horiz:")
    inputs = {"clean": clean, "corrupted": corrupted, "answer": answer, "wrong": wrong}
    if pressed:
        st.query_params.update(inputs)
    return inputs, pressed or given


def show_patching(result) -> None:
    st.caption(md_escape(f"logit difference {result.clean_diff:.3f} on the clean prompt, {result.corrupted_diff:.3f} "
                         "on the corrupted one; each cell is the normalised logit difference after patching that "
                         "activation from the clean run into the corrupted run (1: fully restored, 0: no effect)"))
    left, right = st.columns(2)
    with left:
        st.markdown("**Head outputs** (hook_z, every position)")
        st.plotly_chart(heads_figure(result.heads), width="stretch")
    with right:
        st.markdown("**Residual stream** (entering each layer, one position at a time)")
        st.plotly_chart(resid_figure(result.resid, result.clean_tokens, result.corrupted_tokens), width="stretch")
