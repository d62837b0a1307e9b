"""An attribution graph as people see it, the same on the Attribution page and in the reports: the graph drawn
with plotly (dictionaries as columns, token positions as rows, node size = |attribution|, error nodes as squares),
its metric and faithfulness in words, its strongest nodes, and the labels of the features it names.

The graph document is store/graphs.py's layout: nodes "DICT:FEATURE@POS", "DICT:error@POS" and "logit", links with
a signed weight.

    fig = graph_figure(graph, row.dictionaries, feature_notes(con, node_features(graph)))
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Sequence

import duckdb
import plotly.graph_objects as go

from analysis.display import num, visible
from store import explanations as explained
from store import queries

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
    faith = metadata.get("faithfulness") or {}
    pruned = faith.get("recovered_by_attribution")
    before = ("" if pruned is None else f"; attribution pruning alone, before {faith.get('refine_rounds', 0)} "
              f"refinement round(s), kept {100 * pruned:.0f}%")
    return f"{keeps} ({row.ablation} ablation){before}; {loses}"


def node_features(graph: dict) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """((dictionary, (feature, ...)), ...) of the graph's feature nodes, sorted (hashable: a cache key)."""
    features: dict[str, set[int]] = {}
    for node in graph["nodes"]:
        if node["feature_type"] == "feature":
            features.setdefault(node["dictionary"], set()).add(int(node["feature"]))
    return tuple((d, tuple(sorted(f))) for d, f in sorted(features.items()))


def feature_notes(con: duckdb.DuckDBPyConnection,
                  wanted: tuple[tuple[str, tuple[int, ...]], ...]) -> dict[tuple[str, int], str]:
    """(dictionary, feature) -> its label and explanations joined ("label \u00b7 explanation"), for ((dictionary,
    features), ...); features with neither are left out."""
    found: dict[tuple[str, int], str] = {}
    for dictionary, features in wanted:
        labels = queries.feature_notes(con, dictionary, features)
        try:
            texts = explained.explanations_of(con, dictionary, features)
        except duckdb.CatalogException:  # no explanations table before its migration
            texts = {}
        for feature in features:
            label = labels.get(feature, (None, None))[0]
            explanation = " | ".join(e.text for e in texts.get(feature, []))
            note = " \u00b7 ".join(part for part in (label, explanation) if part)
            if note:
                found[(dictionary, feature)] = note
    return found


def top_nodes(graph: dict, n: int = 20) -> list[dict]:
    """The `n` feature and error nodes with the largest |attribution|, strongest first (the logit node left out)."""
    nodes = [node for node in graph["nodes"] if node["feature_type"] != "logit"]
    return sorted(nodes, key=lambda node: -abs(node.get("attribution") or 0.0))[:n]
