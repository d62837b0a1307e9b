"""Plots and small widgets for attention heads: the layer x head grid, patterns, contexts, head attribution."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from app.ui.widgets.common import tokens_html, visible

COMPACT_AFTER = 40
"""Prompts longer than this get the compact pattern view (the last destinations only, plus a table)."""


def score_grid_figure(grid: np.ndarray, score: str, n_kv_heads: int, selected: tuple[int, int] | None) -> go.Figure:
    """Layer x head heatmap of one score; hover names the KV group; the open head is outlined.

    plotly.js cannot select heatmap cells, so an invisible marker sits on every cell: clicking a cell selects
    its marker, which st.plotly_chart(on_select=...) reports with x = head, y = layer.
    """
    n_layers, n_heads = grid.shape
    group = np.arange(n_heads) // max(n_heads // n_kv_heads, 1)
    layer, head = np.meshgrid(np.arange(n_layers), np.arange(n_heads), indexing="ij")
    height = max(260, 18 * n_layers + 80)
    fig = go.Figure(go.Heatmap(z=grid, x=list(range(n_heads)), y=list(range(n_layers)), colorscale="Viridis",
                               hoverinfo="skip"))
    fig.add_trace(go.Scatter(
        x=head.ravel(), y=layer.ravel(), mode="markers", showlegend=False,
        customdata=np.stack([grid.ravel(), np.broadcast_to(group, grid.shape).ravel()], axis=-1),
        marker=dict(symbol="square", color="rgba(0,0,0,0)", size=max(8, min(40, 0.8 * (height - 80) / n_layers))),
        hovertemplate="layer %{y} head %{x} (KV group %{customdata[1]})<br>" + score
                      + " %{customdata[0]:.4f}<extra></extra>"))
    if selected is not None:
        fig.add_shape(type="rect", x0=selected[1] - 0.5, x1=selected[1] + 0.5, y0=selected[0] - 0.5,
                      y1=selected[0] + 0.5, line=dict(color="red", width=2))
    # fixed ranges: the click markers would otherwise pad the axes with layers and heads that do not exist
    fig.update_layout(xaxis_title="head", yaxis_title="layer", height=height, margin=dict(t=10, b=10),
                      yaxis=dict(range=[n_layers - 0.5, -0.5], dtick=1), xaxis=dict(range=[-0.5, n_heads - 0.5],
                                                                                   dtick=1),
                      clickmode="event+select")
    return fig


def _labels(tokens: Sequence[str], positions: Sequence[int]) -> list[str]:
    # plotly merges equal category labels, so every label carries its position
    return [f"{p}: {visible(tokens[p])}" for p in positions]


def pattern_figure(tokens: Sequence[str], pattern: np.ndarray, first_dest: int = 0,
                   title: str = "") -> go.Figure:
    """[dest, src] heatmap with token labels on both axes; rows first_dest.. only (compact view)."""
    dests = list(range(first_dest, pattern.shape[0]))
    srcs = list(range(pattern.shape[1]))
    fig = go.Figure(go.Heatmap(
        z=pattern[first_dest:], x=_labels(tokens, srcs), y=_labels(tokens, dests), colorscale="Blues",
        zmin=0, zmax=1, hovertemplate="dest %{y}<br>src %{x}<br>weight %{z:.4f}<extra></extra>"))
    side = 16 * len(dests) + 160
    fig.update_layout(title=title, xaxis_title="source", yaxis_title="destination", height=min(max(side, 300), 1200),
                      yaxis_autorange="reversed", margin=dict(t=30 if title else 10, b=10),
                      xaxis=dict(type="category", tickangle=-60), yaxis=dict(type="category"))
    return fig


def top_sources_rows(tokens: Sequence[str], top: list[list[tuple[int, float]]], first_dest: int = 0) -> list[dict]:
    """One row per destination with its strongest sources, for st.dataframe."""
    rows = []
    for dest in range(first_dest, len(top)):
        row = {"dest": dest, "token": visible(tokens[dest])}
        for i, (src, weight) in enumerate(top[dest]):
            row[f"source {i + 1}"] = f"{src}: {visible(tokens[src])} ({weight:.2f})"
        rows.append(row)
    return rows


def context_html(tokens: Sequence[str], peak_weight: Sequence[float], peak_src: Sequence[int]) -> str:
    """A top-attending context: each token shaded by the head's peak non-first weight from it (destination
    d = index + 1); hover shows where it looks. The strongest destination is outlined."""
    weights = [0.0, *peak_weight]
    titles = ["first token"] + [f"-> {s}: {visible(tokens[s])} ({w:.2f})" for s, w in zip(peak_src, peak_weight)]
    return tokens_html(tokens, weights, 1.0, titles, mark=int(np.argmax(weights)))


def ranking_figure(effects, n_layers: int, n_heads: int) -> go.Figure:
    """Layer x head heatmap of the target-logit change each head's ablation causes."""
    grid = np.zeros((n_layers, n_heads))
    for e in effects:
        grid[e.layer, e.head] = e.logit_delta
    bound = float(np.abs(grid).max()) or 1.0
    fig = go.Figure(go.Heatmap(z=grid, colorscale="RdBu", zmin=-bound, zmax=bound,
                               hovertemplate="layer %{y} head %{x}<br>logit change %{z:+.4f}<extra></extra>"))
    fig.update_layout(xaxis_title="head", yaxis_title="layer", height=max(240, 16 * n_layers + 80),
                      yaxis=dict(autorange="reversed", dtick=1), xaxis=dict(dtick=1), margin=dict(t=10, b=10))
    return fig


def head_attribution_figure(weights: Sequence[float], n_kv_heads: int | None = None,
                            measure: str = "share of decoder norm") -> go.Figure:
    """Bar chart of a feature's head attribution (a share per head, `measure` says of what; sums to 1)."""
    n_heads = len(weights)
    group = n_heads // n_kv_heads if n_kv_heads else 1
    names = [f"{h}" + (f" (KV {h // group})" if n_kv_heads and n_kv_heads < n_heads else "") for h in range(n_heads)]
    heads = list(range(n_heads))
    fig = go.Figure(go.Bar(x=heads, y=list(weights), customdata=names,
                           hovertemplate="head %{customdata}: %{y:.1%}<extra></extra>"))
    # one tick per head, at the head's number: plotly's own ticks on a number axis fall between heads (0.5, 1.5)
    fig.update_layout(xaxis=dict(title="head", tickmode="array", tickvals=heads, ticktext=names),
                      yaxis_title=measure, yaxis_tickformat=".0%", height=260, margin=dict(t=10, b=10))
    return fig


def head_attribution_section(dictionary, feature: int) -> None:
    """For the feature page of an attention-output dictionary (hook blocks.L.attn.hook_z): head attribution."""
    from app.ui.data import heads as heads_cache

    st.subheader("Head attribution")
    weights, n_kv = heads_cache.feature_head_weights(dictionary.model, dictionary.name, dictionary.path,
                                                        feature)
    if weights is None:
        st.caption("head attribution needs the dictionary's weights on disk and its model")
        return
    st.plotly_chart(head_attribution_figure(weights, n_kv), width="stretch")
    st.caption("share of the feature's decoder norm in each head's block of hook_z (sums to 1)")
