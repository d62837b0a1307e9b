"""Compare two dictionaries on the same site: match features by decoder cosine, see what each side lacks."""
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.ui.data import cache
from app.ui.widgets.common import feature_url, md_escape, show_error
from store.errors import InputError

st.title("Compare dictionaries")
data = cache.fetch(cache.overview)
rows = {r.name: r for r in data.dictionaries if Path(r.path).is_dir()}
if len(rows) < 2:
    st.info("Comparing needs two dictionaries on the same site: train another with `sparsescope train`.")
    st.stop()
for param in ("a", "b"):
    if st.query_params.get(param) not in (None, *rows):
        show_error(InputError(f"unknown dictionary {st.query_params.get(param)!r} (known: {', '.join(rows)})"))


def same_site(name: str) -> list[str]:
    a = rows[name]
    return [n for n, r in rows.items() if n != name and (r.model, r.hook, r.d_in) == (a.model, a.hook, a.d_in)]


names = [n for n in rows if same_site(n)]
if not names:
    st.info("No two dictionaries read the same site (model, hook and width).")
    st.stop()
asked_a, asked_b = st.query_params.get("a"), st.query_params.get("b")
left, right = st.columns(2)
a = left.selectbox("dictionary A", names, index=names.index(asked_a) if asked_a in names else 0)
partners = same_site(a)
if asked_b is not None and asked_b not in partners:
    show_error(InputError(f"{asked_b} does not read the same site as {a} ({rows[a].model} {rows[a].hook})"))
b = right.selectbox("dictionary B", partners, index=partners.index(asked_b) if asked_b in partners else 0)
st.query_params.update({"a": a, "b": b})
st.caption(md_escape(f"site {rows[a].model} \u00b7 {rows[a].hook}; {rows[a].arch} ({rows[a].d_sae:,} features) "
                     f"against {rows[b].arch} ({rows[b].d_sae:,} features)"))

match = cache.compute(cache.compare, a, cache.stamp(rows[a].path), b, cache.stamp(rows[b].path))
threshold = st.slider("a match counts when the decoder cosine is at least", 0.0, 1.0, 0.7, 0.05)
cols = st.columns(4)
cols[0].metric("method", md_escape(match.method))
cols[1].metric("matched pairs", f"{len(match.cos):,}")
cols[2].metric("mean cos of pairs", f"{match.cos.mean():.3f}" if len(match.cos) else "-")
cols[3].metric(f"pairs with cos \u2265 {threshold:.2f}", f"{(match.cos >= threshold).mean():.1%}"
               if len(match.cos) else "-")

fig = go.Figure(go.Histogram(x=match.cos, nbinsx=50, name="matched pairs"))
fig.add_vline(x=threshold, line_dash="dash", line_color="red")
fig.update_layout(title="Match quality: decoder cosine of each matched pair", xaxis_title="cosine",
                  yaxis_title="pairs", height=320, margin=dict(t=40, b=10))
st.plotly_chart(fig, width="stretch")


def unmatched_table(side: str, name: str) -> None:
    ids = match.unmatched(side, threshold)
    st.markdown(f"**{len(ids):,} features of {md_escape(name)}** without a partner at cos \u2265 {threshold:.2f}")
    ids = ids[:500]
    partner, partner_cos = match.partners(side)[ids], match.partner_cos(side)[ids]
    best = (match.best_a if side == "a" else match.best_b)[ids]
    info = cache.fetch(cache.summaries, name, tuple(int(i) for i in ids), 3) if name in data.analysed else {}
    frame = pd.DataFrame({
        "feature": ids, "partner": np.where(partner >= 0, partner, None), "partner cos": partner_cos,
        "best cos": best, "density": [info[i].density if i in info else None for i in ids],
        "label": [info[i].label if i in info else "" for i in ids],
        "open": [feature_url(name, i) if name in data.analysed else None for i in ids]})
    st.dataframe(frame, hide_index=True, width="stretch", height=360, column_config={
        "density": st.column_config.NumberColumn(format="percent"),
        "open": st.column_config.LinkColumn("open", display_text="open")})


left, right = st.columns(2)
with left:
    unmatched_table("a", a)
with right:
    unmatched_table("b", b)
