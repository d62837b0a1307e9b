"""Attribution (/attribution?graph=ID&node=NODE_ID): the stored attribution graphs (`sparsescope attribute`), newest
first; the chosen graph drawn with dictionaries as columns and token positions as rows, its faithfulness in words
and a JSON download; click a feature node for its details, its feature page and steering, and any node but the
logit to ablate it and rerun the model."""
import json

import pandas as pd
import streamlit as st

from analysis.graph_view import (
    MAX_LINKS,
    faithfulness_words,
    graph_figure,
    metric_words,
    node_features,
    node_note,
    prompt_tokens,
)
from app.ui.data import attribution as data
from app.ui.data import cache
from app.ui.widgets.attribution import ablation_section, clicked_node, node_details
from app.ui.widgets.common import int_param, md_escape, num, pct, show_error
from store.errors import InputError

st.title("Attribution")
try:
    asked = int_param("graph", st.query_params.get("graph"))
except InputError as exc:
    show_error(exc)
rows = cache.fetch(data.graphs)
if not rows:
    st.info("No attribution graph yet: make one with `sparsescope attribute --prompt TEXT --target TOKEN` "
            "(optionally `--contrast TOKEN --dictionaries A,B,C`), then reload this page.")
    st.stop()
if asked is not None:
    cache.fetch(data.graph, asked)  # an id the store lacks: one error naming the stored ids
ids = [r.id for r in rows]
by_id = {r.id: r for r in rows}
graph_id = st.selectbox("graph", ids, index=ids.index(asked) if asked in by_id else 0,
                        format_func=lambda i: f"#{i} \u00b7 {by_id[i].prompt[:60]!r} \u2192 {by_id[i].target!r}")
if st.query_params.get("graph", str(graph_id)) != str(graph_id):
    st.query_params.pop("node", None)  # another graph was chosen: the node was one of the graph before
st.query_params["graph"] = str(graph_id)

with st.expander(f"stored graphs ({len(rows)})", expanded=asked is None and len(rows) > 1):
    st.dataframe(pd.DataFrame({
        "graph": [f"attribution?graph={r.id}" for r in rows], "prompt": [r.prompt for r in rows],
        "target": [r.target for r in rows], "contrast": [r.contrast or "" for r in rows],
        "metric": [r.metric for r in rows], "recovered": [r.recovered for r in rows],
        "top removed": [r.top_removed for r in rows], "ablation": [r.ablation for r in rows],
        "nodes": [r.n_nodes for r in rows], "links": [r.n_links for r in rows],
        "created": [r.created for r in rows]}), hide_index=True, width="stretch", column_config={
        "graph": st.column_config.LinkColumn("graph", display_text=r"graph=(\d+)", help="opens the graph"),
        "metric": st.column_config.NumberColumn(format="%.4g", help="the metric on the unmodified model"),
        "recovered": st.column_config.NumberColumn(format="percent", help="share of the metric the graph alone "
                                                                          "keeps, everything else ablated"),
        "top removed": st.column_config.NumberColumn(format="percent", help="share of the metric lost when the "
                                                                            "graph's top nodes are ablated"),
        "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")})

row, graph = cache.fetch(data.graph, graph_id)
metadata = graph["metadata"]
tokens = prompt_tokens(graph)
notes = cache.fetch(data.notes, node_features(graph))
nodes = {n["node_id"]: n for n in graph["nodes"]}
asked_node = st.query_params.get("node")
if asked_node is not None and asked_node not in nodes:
    show_error(InputError(f"graph {graph_id} has no node {asked_node!r}"))

st.markdown(md_escape(f"{row.model}: {row.prompt!r} \u2192 {metric_words(row)} = {num(row.metric)}; dictionaries "
                      f"{', '.join(row.dictionaries)}"))
chart, side = st.columns([3, 1])
with side:
    st.markdown(f"**Faithfulness**: {md_escape(faithfulness_words(row, metadata))}.")
    cols = st.columns(2)
    cols[0].metric("recovered", pct(row.recovered), help="the graph alone, everything else ablated")
    cols[1].metric("top removed", pct(row.top_removed), help="lost when the graph's top nodes are ablated")
    st.download_button("Download graph JSON", json.dumps(graph, indent=1), file_name=f"graph-{graph_id}.json",
                       mime="application/json", icon=":material/download:")
    details = st.container()
with chart:
    if row.n_links > MAX_LINKS:
        st.caption(f"the {MAX_LINKS} strongest of {row.n_links:,} links are drawn")
    st.caption("columns: dictionaries, upstream first; node size: |attribution| (blue positive, red negative); "
               "squares: reconstruction errors; click a node for its details")
    event = st.plotly_chart(graph_figure(graph, row.dictionaries, notes, asked_node), width="stretch",
                            on_select="rerun", selection_mode="points", key=f"graph-{graph_id}")
picked = clicked_node(event)
if picked is not None and picked in nodes and picked != asked_node:
    st.query_params["node"] = picked  # the URL opens the same node (outlined from the next run on)
    asked_node = picked
analysed = cache.fetch(cache.analysed)
with details:
    if asked_node is None:
        st.caption("click a node of the graph for its details")
    else:
        node = nodes[asked_node]
        node_details(graph, node, node_note(node, notes), node.get("dictionary") in analysed, tokens)
        if node["feature_type"] != "logit":
            ablation_section(f"{graph_id}-{asked_node}", row.ablation, node, row.metric,
                             lambda: data.ablate(row, graph, node))
