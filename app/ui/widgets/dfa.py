"""The feature page's block for attention-output (hook_z) dictionaries: each head's share of the feature, and the
direct feature attribution (DFA) of a top example by head and source position (analysis.heads.dfa).

The example is the `dfa` query parameter (its rank among the top examples), so a DFA view is a shareable link.
DFA runs on request (the button, or a link that carries `dfa`), on the shared model under its lock.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from app.ui.data import cache
from app.ui.data import dfa as dfa_data
from app.ui.widgets.common import int_param, md_escape, visible
from app.ui.widgets.heads import head_attribution_figure, head_attribution_section
from store.errors import InputError

DFA_PARAM = "dfa"
"""Query parameter: rank of the top example whose DFA is shown."""


def is_attention_output(hook: str | None) -> bool:
    return bool(hook) and hook.endswith("attn.hook_z")


def _head_names(kv_groups: list[int]) -> list[str]:
    grouped = len(set(kv_groups)) < len(kv_groups)
    return [f"H{h}" + (f" (KV {g})" if grouped else "") for h, g in enumerate(kv_groups)]


def dfa_figure(result, tokens: list[str], selected: int | None = None) -> go.Figure:
    """Heads x source positions heatmap of one feature's DFA at the example's token (sources 0..dest).

    An invisible marker sits on every cell (plotly.js cannot select heatmap cells): clicking one selects its
    marker, which st.plotly_chart(on_select=...) reports with x = source position.
    """
    grid = result.dfa[0][:, :result.dest + 1]  # (head, src)
    n_heads, n_src = grid.shape
    names = _head_names(result.kv_groups)
    bound = float(np.abs(grid).max()) or 1.0
    labels = [f"{s}: {visible(tokens[s])}" for s in range(n_src)]
    fig = go.Figure(go.Heatmap(z=grid, x=list(range(n_src)), y=list(range(n_heads)), colorscale="RdBu",
                               zmid=0, zmin=-bound, zmax=bound, hoverinfo="skip"))
    src, head = np.meshgrid(np.arange(n_src), np.arange(n_heads))
    fig.add_trace(go.Scatter(
        x=src.ravel(), y=head.ravel(), mode="markers", showlegend=False,
        customdata=np.stack([grid.ravel(), np.array(labels, dtype=object)[src.ravel()],
                             np.array(names, dtype=object)[head.ravel()]], axis=-1),
        marker=dict(symbol="square", color="rgba(0,0,0,0)", size=max(6, min(30, 600 // max(n_src, 1)))),
        hovertemplate="%{customdata[2]} from %{customdata[1]}<br>DFA %{customdata[0]:+.4f}<extra></extra>"))
    if selected is not None:
        fig.add_shape(type="rect", x0=selected - 0.5, x1=selected + 0.5, y0=-0.5, y1=n_heads - 0.5,
                      line=dict(color="black", width=2))
    fig.update_layout(
        xaxis=dict(title="source token", tickvals=list(range(n_src)), ticktext=labels, tickangle=-60,
                   range=[-0.5, n_src - 0.5]),
        yaxis=dict(title="head", tickvals=list(range(n_heads)), ticktext=names, range=[n_heads - 0.5, -0.5]),
        height=max(260, 26 * n_heads + 160), margin=dict(t=10, b=10), clickmode="event+select")
    return fig


def source_rows(result, src: int) -> list[dict]:
    """One row per head: its DFA from source `src` and that contribution's share of the token's total."""
    column = result.dfa[0][:, src]
    total = float(column.sum())
    return [{"head": name, "DFA": float(value), "share": float(value) / total if total else None}
            for name, value in zip(_head_names(result.kv_groups), column)]


def attention_output_block(page, feature: int) -> None:
    """Head attribution and DFA of a hook_z dictionary's feature; draws nothing for other dictionaries."""
    row = page.dictionary
    if row is None or not is_attention_output(row.hook):
        return
    shares = cache.fetch(dfa_data.head_shares, row.name, feature)
    if shares:
        st.subheader("Head attribution")
        st.plotly_chart(head_attribution_figure(shares, measure="share of pre-activation"), width="stretch")
        st.caption("each head's share of the feature's pre-activation over its firings in the analysis "
                   "(|z_h . W_enc| summed over firings; sums to 1)")
    else:  # analysed before analyze stored head attribution: the decoder-norm split from the weights
        head_attribution_section(row, feature)
    _dfa_section(page, row, feature)


def _asked_example(n_examples: int) -> int | None:
    """The `dfa` query parameter, checked; raises InputError."""
    asked = int_param(DFA_PARAM, st.query_params.get(DFA_PARAM))
    if asked is not None and asked >= n_examples:
        raise InputError(f"DFA example {asked} is out of range: this feature has top examples 0..{n_examples - 1}")
    return asked


def _dfa_section(page, row, feature: int) -> None:
    st.subheader("Direct feature attribution")
    examples = page.card.top_examples
    if not examples:
        st.caption("no top examples stored")
        return
    try:
        asked = _asked_example(len(examples))
    except InputError as exc:
        st.error(md_escape(str(exc)))
        return
    if asked is None:
        if st.button("DFA of the top examples", icon=":material/hub:", key=f"dfa-go-{row.name}-{feature}"):
            st.query_params[DFA_PARAM] = "0"
            st.rerun()
        st.caption("how much each head, reading from each source token, adds to the feature at an example's token "
                   "(runs the model on the example's context)")
        return
    choice = st.selectbox("example", range(len(examples)), index=asked, key=f"dfa-of-{row.name}-{feature}-{asked}",
                          format_func=lambda i: f"#{i}: activation {examples[i].activation:.4g}, context "
                                                f"{examples[i].context_id}, token {examples[i].position}")
    if choice != asked:
        st.query_params[DFA_PARAM] = str(choice)
    example = examples[choice]
    token_ids = cache.fetch(dfa_data.context, example.corpus, example.context_id)
    if not token_ids or example.position >= len(token_ids):
        st.caption("the example's context is no longer in the store")
        return
    if not row.model:
        st.caption("DFA needs the dictionary's model")
        return
    result = dfa_data.example_dfa(row.model, row.name, row.path, row.hook, token_ids, example.position, feature)
    if result is None:
        st.caption("DFA needs the dictionary's weights on disk")
        return
    _show_dfa(result, example, f"{row.name}-{feature}-{choice}")


def _show_dfa(result, example, key: str) -> None:
    z_term, bias = float(result.z_term[0]), float(result.bias[0])
    st.caption(f"DFA sums to {z_term:+.4f}; with the bias terms {bias:+.4f} that is the pre-activation "
               f"{z_term + bias:+.4f} (stored activation {example.activation:.4g}). Click a cell to pick its "
               "source token.")
    tokens = [str(t) for t in result.tokens]
    n_src = result.dest + 1
    totals = result.dfa[0][:, :n_src].sum(0)
    pick_key, click_key = f"dfa-src-{key}", f"dfa-click-{key}"
    clicked = _clicked_source(st.session_state.get(f"dfa-map-{key}"))
    if clicked is not None and clicked < n_src and clicked != st.session_state.get(click_key):
        st.session_state[click_key] = clicked  # a new click picks its source; the select box can change it after
        st.session_state[pick_key] = clicked
    if pick_key not in st.session_state:  # first view: the source that adds the most, either sign
        st.session_state[pick_key] = int(np.abs(totals).argmax())
    st.plotly_chart(dfa_figure(result, tokens, st.session_state[pick_key]), width="stretch", key=f"dfa-map-{key}",
                    on_select="rerun", selection_mode="points")
    source = st.selectbox("source token", range(n_src), key=pick_key,
                          format_func=lambda s: f"{s}: {visible(tokens[s])} ({totals[s]:+.4f})")
    st.dataframe(source_rows(result, source), hide_index=True, width="stretch",
                 column_config={"DFA": st.column_config.NumberColumn(format="%+.4f"),
                                "share": st.column_config.NumberColumn("share of the token's DFA",
                                                                       format="percent")})


def _clicked_source(event) -> int | None:
    """The source position of a clicked heatmap cell (its marker), from st.plotly_chart's selection state."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return None
    return int(points[0]["x"]) if points else None
