"""The Attribution page's pieces: an attribution graph as a plotly figure (dictionaries as columns, token positions
as rows), its faithfulness in words, one node's details with its strongest links, and the node ablated and the model
rerun, the metric's change beside the attribution's prediction.

The graph document is store/graphs.py's layout: nodes "DICT:FEATURE@POS", "DICT:error@POS" and "logit", links with
a signed weight.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.ui.widgets.common import md_escape, num, page_link, visible
from store.errors import InputError

NODE_TRACES = {"feature": "circle", "error": "square", "logit": "star"}
"""One scatter trace per node type, drawn after the links, each with its marker symbol."""
POSITIVE, NEGATIVE = "37, 99, 235", "220, 38, 38"
"""RGB of a positive and a negative attribution (node) or weight (link)."""
NODE_SIZE = (8.0, 40.0)
"""Marker diameter of the weakest and the strongest node, in pixels (size grows with |attribution|)."""
LINK_WIDTH = (0.5, 8.0)
"""Line width of a link of weight 0 and of the strongest link, in pixels (width grows with |weight|)."""
MAX_LINKS = 400
"""Links drawn at most (the strongest); plotly draws each link as a trace of its own."""
SPREAD = 0.7
"""Share of a column's width that nodes at the same position spread over."""


@dataclass(frozen=True)
class Layout:
    """Where each node sits: x = column (jittered within it), y = token position."""
    columns: list[str]
    """Column titles, upstream first; the logit node's column is last."""
    xy: dict[str, tuple[float, int]]
    tokens: list[str]


def _color(value: float, alpha: float = 1.0) -> str:
    return f"rgba({POSITIVE if value >= 0 else NEGATIVE},{alpha:.2f})"


def column_key(node: dict, order: Sequence[str]) -> tuple:
    """Sort key of a node's column: its layer, then its dictionary's place in `order` (upstream first)."""
    name = node.get("dictionary")
    rank = order.index(name) if name in order else len(order)
    return (node.get("layer") if node.get("layer") is not None else -1, rank, name or "")


def prompt_tokens(graph: dict) -> list[str]:
    """The prompt's tokens: the document's metadata, else the tokens its nodes carry."""
    tokens = list(graph["metadata"].get("prompt_tokens") or [])
    if tokens:
        return tokens
    n = 1 + max((node.get("ctx_idx") or 0 for node in graph["nodes"]), default=0)
    tokens = [""] * n
    for node in graph["nodes"]:
        if node["feature_type"] != "logit" and node.get("ctx_idx") is not None:
            tokens[node["ctx_idx"]] = node.get("token") or ""
    return tokens


def layout(graph: dict, order: Sequence[str]) -> Layout:
    """Columns by (layer, dictionary), the logit node in its own rightmost column; nodes at one position of one
    column spread side by side."""
    tokens = prompt_tokens(graph)
    keys = sorted({column_key(n, order) for n in graph["nodes"] if n["feature_type"] != "logit"})
    columns = [f"{name} (layer {layer})" if layer >= 0 else name for layer, _, name in keys]
    groups: dict[tuple[int, int], list[str]] = {}
    for node in graph["nodes"]:
        if node["feature_type"] == "logit":
            col, pos = len(keys), node.get("ctx_idx") if node.get("ctx_idx") is not None else len(tokens) - 1
        else:
            col, pos = keys.index(column_key(node, order)), node["ctx_idx"]
        groups.setdefault((col, pos), []).append(node["node_id"])
    xy = {}
    for (col, pos), ids in groups.items():
        step = SPREAD / len(ids)
        for i, node_id in enumerate(ids):
            xy[node_id] = (col + (i - (len(ids) - 1) / 2) * step, pos)
    if any(n["feature_type"] == "logit" for n in graph["nodes"]):
        columns.append("logit")
    return Layout(columns, xy, tokens)


def _hover(node: dict, tokens: list[str], note: str | None, metadata: dict) -> str:
    """A node's hover text (plotly renders a little HTML: every value is escaped)."""
    pos = node.get("ctx_idx")
    at = f" @ {pos} {html.escape(repr(visible(tokens[pos])))}" if pos is not None and pos < len(tokens) else ""
    kind = node["feature_type"]
    if kind == "logit":
        target, contrast = metadata.get("target", ""), metadata.get("contrast")
        what = f"logit {html.escape(repr(target))}" + (f" \u2212 {html.escape(repr(contrast))}" if contrast else "")
        return f"<b>{what}</b>{at}<br>metric {num(node.get('attribution'))}"
    head = f"{html.escape(node['dictionary'])} " + (f"#{node['feature']}" if kind == "feature" else "error")
    lines = [f"<b>{head}</b>{at}"]
    if note:
        lines.append(html.escape(note if len(note) <= 120 else note[:119] + "\u2026"))
    if kind == "feature":
        lines.append(f"activation {num(node.get('activation'))}")
    lines.append(f"attribution {num(node.get('attribution'))}")
    return "<br>".join(lines)


def node_note(node: dict, notes: dict[tuple[str, int], str]) -> str | None:
    if node["feature_type"] != "feature":
        return None
    return notes.get((node["dictionary"], int(node["feature"])))


def graph_figure(graph: dict, order: Sequence[str], notes: dict[tuple[str, int], str],
                 selected: str | None = None) -> go.Figure:
    """Links first (one trace each, width = |weight|), then one trace per node type (size = |attribution|, colour
    = its sign); every node's customdata is its node_id, so a click names the node."""
    place = layout(graph, order)
    nodes = graph["nodes"]
    top_attr = max((abs(n.get("attribution") or 0.0) for n in nodes), default=0.0) or 1.0
    links = sorted(graph["links"], key=lambda link: -abs(link["weight"]))[:MAX_LINKS]
    top_weight = max((abs(link["weight"]) for link in links), default=0.0) or 1.0
    fig = go.Figure()
    for link in reversed(links):  # the strongest drawn last, on top
        (x0, y0), (x1, y1) = place.xy[link["source"]], place.xy[link["target"]]
        share = abs(link["weight"]) / top_weight
        fig.add_trace(go.Scatter(
            x=[x0, x1], y=[y0, y1], mode="lines", name="link", showlegend=False, hoverinfo="skip",
            line=dict(width=LINK_WIDTH[0] + (LINK_WIDTH[1] - LINK_WIDTH[0]) * share,
                      color=_color(link["weight"], 0.25 + 0.45 * share))))
    for kind, symbol in NODE_TRACES.items():
        members = [n for n in nodes if n["feature_type"] == kind]
        if not members:
            continue
        sizes = [NODE_SIZE[0] + (NODE_SIZE[1] - NODE_SIZE[0]) * abs(n.get("attribution") or 0.0) / top_attr
                 for n in members]
        fig.add_trace(go.Scatter(
            x=[place.xy[n["node_id"]][0] for n in members], y=[place.xy[n["node_id"]][1] for n in members],
            mode="markers", name={"feature": "feature", "error": "error node", "logit": "logit"}[kind],
            customdata=[n["node_id"] for n in members],
            hovertext=[_hover(n, place.tokens, node_note(n, notes), graph["metadata"]) for n in members],
            hovertemplate="%{hovertext}<extra></extra>",
            marker=dict(symbol=symbol, size=sizes, color=[_color(n.get("attribution") or 0.0) for n in members],
                        line=dict(width=[3 if n["node_id"] == selected else 1 for n in members],
                                  color=["black" if n["node_id"] == selected else "white" for n in members]))))
    n_pos = len(place.tokens)
    fig.update_layout(
        height=max(360, 26 * n_pos + 120), margin=dict(t=10, b=10, l=10, r=10), clickmode="event+select",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
        xaxis=dict(tickvals=list(range(len(place.columns))), ticktext=place.columns, range=[-0.6, len(place.columns)
                                                                                           - 0.4],
                   zeroline=False, showgrid=False),
        # quoted: a token that is a space (or starts with one) stays visible on the axis
        yaxis=dict(tickvals=list(range(n_pos)), ticktext=[repr(visible(t)) for t in place.tokens],
                   autorange="reversed", zeroline=False, title="token"))
    return fig


def clicked_node(event) -> str | None:
    """The node_id of the node a plotly selection event picked (its first point), if a node was picked."""
    points = event.selection.points if event is not None and event.selection else []
    for point in points:
        custom = point.get("customdata")
        if isinstance(custom, list):  # plotly sends a scalar customdata as itself, some versions as [value]
            custom = custom[0] if custom else None
        if isinstance(custom, str):
            return custom
    return None


def metric_words(row) -> str:
    if row.contrast is not None:
        return f"the logit difference {row.target!r} \u2212 {row.contrast!r}"
    return f"the logit of {row.target!r}"


def faithfulness_words(row, metadata: dict) -> str:
    """"the graph alone keeps 72% of the logit difference ... (mean ablation); removing its top 10 nodes loses 41%"."""
    what = metric_words(row)
    top_n = (metadata.get("faithfulness") or {}).get("top_n")
    top = f"its top {top_n} nodes" if top_n else "its top nodes"
    keeps = ("the graph alone keeps an unmeasured share of " + what if row.recovered is None
             else f"the graph alone keeps {100 * row.recovered:.0f}% of {what}")
    loses = (f"removing {top} was not measured" if row.top_removed is None
             else f"removing {top} loses {100 * row.top_removed:.0f}%")
    return f"{keeps} ({row.ablation} ablation); {loses}"


def _link_rows(graph: dict, node_id: str, limit: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    incoming = sorted((lk for lk in graph["links"] if lk["target"] == node_id), key=lambda lk: -abs(lk["weight"]))
    outgoing = sorted((lk for lk in graph["links"] if lk["source"] == node_id), key=lambda lk: -abs(lk["weight"]))
    return (pd.DataFrame({"from": [lk["source"] for lk in incoming[:limit]],
                          "weight": [lk["weight"] for lk in incoming[:limit]]}, columns=["from", "weight"]),
            pd.DataFrame({"to": [lk["target"] for lk in outgoing[:limit]],
                          "weight": [lk["weight"] for lk in outgoing[:limit]]}, columns=["to", "weight"]))


def node_details(graph: dict, node: dict, note: str | None, analysed: bool, tokens: list[str]) -> None:
    """A clicked node: what it is, its numbers, links to its feature page and to steering, its strongest links."""
    kind = node["feature_type"]
    pos = node.get("ctx_idx")
    token = f" at {pos} ({visible(tokens[pos])!r})" if pos is not None and pos < len(tokens) else ""
    if kind == "feature":
        st.markdown(md_escape(f"{node['dictionary']} #{node['feature']}{token}"))
    elif kind == "error":
        st.markdown(md_escape(f"reconstruction error of {node['dictionary']}{token}"))
    else:
        st.markdown(md_escape(f"the metric{token}"))
    if note:
        st.caption(md_escape(note))
    cols = st.columns(2)
    if kind == "feature":
        cols[0].metric("activation", num(node.get("activation")))
    cols[1].metric("attribution", num(node.get("attribution")))
    if kind == "feature":
        if analysed:
            page_link("feature", "open feature page", ":material/neurology:", dict=node["dictionary"],
                      feature=int(node["feature"]))
        else:
            st.caption(md_escape(f"{node['dictionary']} is not analysed: no feature page"))
        page_link("steering", "steer with this feature", ":material/tune:", dict=node["dictionary"],
                  feature=int(node["feature"]))
    incoming, outgoing = _link_rows(graph, node["node_id"])
    for frame in (incoming, outgoing):
        if len(frame):
            st.dataframe(frame, hide_index=True, width="stretch",
                         column_config={"weight": st.column_config.NumberColumn(format="%.4g")})


def _decimals(*changes: float) -> int:
    """Two decimals, as the metric is read, or as many as show the smallest nonzero change to two significant
    digits (at most 6)."""
    small = min((abs(c) for c in changes if c), default=1.0)
    return max(2, min(6, 1 - math.floor(math.log10(small))))


def ablation_words(before: float, after: float, attribution: float | None) -> str:
    """"metric 4.13 -> 3.20 (change -0.93; attribution predicted -0.88)": ablating a node to its baseline, attribution
    patching predicts the change -attribution (analysis/attribution/ablate.py)."""
    change = after - before
    predicted = None if attribution is None else 0.0 - attribution  # 0.0 - 0.0 is +0.0, not -0.0
    d = _decimals(change, *(() if predicted is None else (predicted,)))
    words = f"metric {before:.{d}f} -> {after:.{d}f} (change {change:+.{d}f}"
    return words + (")" if predicted is None else f"; attribution predicted {predicted:+.{d}f})")


DRIFT = 1e-3
"""Relative difference between the metric rerun and the stored one above which the page says the inputs changed."""


def ablation_section(key: str, kind: str, node: dict, stored_metric: float, run: Callable) -> None:
    """The "ablate this node and rerun" button of a feature or error node; `run()` returns the
    analysis.attribution.NodeAblation (or raises InputError: one st.error). The result stays shown for the node
    (session_state keeps which nodes were asked for; the run itself is cached)."""
    asked = st.session_state.setdefault("attribution_ablated", set())
    if st.button("ablate this node and rerun", key=f"ablate-{key}", icon=":material/block:",
                 help=f"replace the node by its {kind} baseline and rerun the model; attribution patching predicts "
                      "the metric changes by -attribution"):
        asked.add(key)
    if key not in asked:
        return
    with st.spinner("ablating the node and rerunning the model..."):
        try:
            done = run()
        except InputError as exc:
            st.error(md_escape(str(exc)))
            return
    st.markdown(md_escape(ablation_words(done.before, done.after, node.get("attribution"))))
    if abs(done.before - stored_metric) > DRIFT * max(1.0, abs(stored_metric)):
        st.caption(md_escape(f"the metric rerun ({num(done.before)}) is not the graph's ({num(stored_metric)}): the "
                             "model or dictionaries changed since the graph was made, so its attribution is of "
                             "another model"))
