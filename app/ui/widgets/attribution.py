"""The Attribution page's pieces: a click on the graph's figure read back as a node, one node's details with its
strongest links, and the node ablated and the model rerun, the metric's change beside the attribution's prediction.
The figure itself, the layout and the faithfulness in words are analysis/graph_view.py's (the reports draw the same).
"""
from __future__ import annotations

import math
from typing import Callable

import pandas as pd
import streamlit as st

from app.ui.widgets.common import md_escape, num, page_link, visible
from store.errors import InputError


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
