"""The pursuit trace of one token: residual norm by step and the coefficient of each chosen atom."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.ui.widgets.common import feature_url


def pursuit_figure(trace, threshold: float | None = None, stop: int | None = None) -> go.Figure:
    """Bars: the coefficient added at each step (hover: its atom); line: the residual norm before step 1 and
    after each step, on a second axis; with a threshold, a dashed line at it and a dotted one where adaptive
    inference would stop (after step `stop`)."""
    steps = list(range(1, len(trace.atoms) + 1))
    fig = go.Figure([
        go.Bar(x=steps, y=trace.coeffs, name="coefficient", customdata=trace.atoms,
               hovertemplate="step %{x}: atom #%{customdata}, coefficient %{y:.4g}<extra></extra>"),
        go.Scatter(x=[0, *steps], y=[trace.input_norm, *trace.residual_norms], name="residual norm",
                   mode="lines+markers", yaxis="y2",
                   hovertemplate="after step %{x}: residual norm %{y:.4g}<extra></extra>"),
    ])
    fig.update_layout(xaxis=dict(title="pursuit step", dtick=1), yaxis_title="coefficient", height=300,
                      yaxis2=dict(title="residual norm", overlaying="y", side="right", rangemode="tozero"),
                      legend=dict(orientation="h", y=1.12), margin=dict(t=30, b=10))
    if threshold is not None:
        fig.add_shape(type="line", xref="paper", x0=0, x1=1, yref="y2", y0=threshold, y1=threshold,
                      line=dict(dash="dash", color="grey"), name="residual threshold")
    if stop is not None:
        fig.add_vline(x=stop + 0.5, line=dict(dash="dot", color="firebrick"), annotation_text="adaptive stop")
    return fig


def pursuit_table(dictionary: str, trace, labels: dict[int, str], linked: bool) -> None:
    """One row per step: the atom (a link to its feature page when `linked`), coefficient, residual norm, label."""
    frame = pd.DataFrame({
        "step": range(1, len(trace.atoms) + 1),
        "atom": [feature_url(dictionary, a) for a in trace.atoms] if linked else trace.atoms,
        "coefficient": trace.coeffs, "residual norm": trace.residual_norms,
        "label": [labels.get(a, "") for a in trace.atoms]})
    config = {"atom": st.column_config.LinkColumn("atom", display_text=r"feature=(\d+)")} if linked else {}
    st.dataframe(frame, hide_index=True, width="stretch", column_config=config)
