"""Home: the workspace at a glance (models, corpora, dictionaries and their metrics, FVU against L0)."""
import pandas as pd
import plotly.express as px
import streamlit as st

from app.ui.data import cache
from app.ui.widgets.common import md_escape, page_link

CHART_TAB = "FVU against L0"
MAX_POINT_LABELS = 15  # up to this many dictionaries the FVU chart names every point (beyond: on hover)
METRICS = {"l0": "L0", "fvu": "FVU", "ce_recovered": "CE recovered", "delta_ce": "delta CE", "kl": "KL",
           "cos": "cos", "dead": "dead", "dense": "dense"}

USAGE_HELP = {
    "used": "share of the features (a codebook's codes) that fired at least once in the analysis",
    "perplexity": "exp of the entropy of the firings over features: the effective number of features (codes) in use",
    "MP steps": "matching pursuit: atoms chosen per token in the analysis",
    "MP stops": "matching pursuit: why pursuit stopped, share of the evaluation tokens per reason",
}


def mp_stops(metrics: dict) -> str | None:
    """'reason share, ...' of the mp_stop_* metrics, commonest first (None where there are none)."""
    shares = sorted(((v, k.removeprefix("mp_stop_")) for k, v in metrics.items()
                     if k.startswith("mp_stop_") and v), reverse=True)
    return ", ".join(f"{reason} {share:.0%}" for share, reason in shares) or None


st.title("SparseScope")
ws = cache.workspace()
st.caption(f"workspace {md_escape(str(ws.root))}")
data = cache.fetch(cache.overview)
if data.empty:
    st.info(cache.empty_message(ws))
    st.stop()

a, b, c, d = st.columns(4)
a.metric("models", len(data.models))
b.metric("corpora", len(data.corpora))
c.metric("dictionaries", len(data.dictionaries))
d.metric("analysed", len(data.analysed))

st.subheader("Dictionaries")
if not data.dictionaries:
    st.info("No dictionaries yet: train one with `sparsescope train` (or run `sparsescope demo`).")
else:
    table = pd.DataFrame([{
        "name": row.name, "arch": row.arch, "model": row.model or "-", "hook": row.hook or "-",
        "d_sae": row.d_sae, "k": row.k,
        **{label: data.metrics.get(row.name, {}).get(key) for key, label in METRICS.items()},
        "used": getattr(data.usage.get(row.name), "used", None),
        "perplexity": getattr(data.usage.get(row.name), "perplexity", None),
        "MP steps": getattr(data.usage.get(row.name), "mp_steps", None),
        "MP stops": mp_stops(data.metrics.get(row.name, {})),
        "analysed": row.name in data.analysed,
        "browse": f"browser?dict={row.name}" if row.name in data.analysed else None,
    } for row in data.dictionaries])
    # The chart sits in its own tab, drawn only when that tab is open: plotly's frontend code (4.7 MB) would hold
    # the page's first paint by about 1.5 s (bench/ui_first_view.py), the table needs none of it.
    in_table, in_chart = st.tabs(["Table", CHART_TAB], key="view", bind="query-params")
    in_table.dataframe(table, hide_index=True, width="stretch", column_config={
        "browse": st.column_config.LinkColumn("browse", display_text="features"),
        "dead": st.column_config.NumberColumn(format="percent"),
        "dense": st.column_config.NumberColumn(format="percent"),
        "CE recovered": st.column_config.NumberColumn(format="%.3f"),
        "FVU": st.column_config.NumberColumn(format="%.3f"), "L0": st.column_config.NumberColumn(format="%.1f"),
        "used": st.column_config.NumberColumn(format="percent", help=USAGE_HELP["used"]),
        "perplexity": st.column_config.NumberColumn(format="%.1f", help=USAGE_HELP["perplexity"]),
        "MP steps": st.column_config.NumberColumn(format="%.2f", help=USAGE_HELP["MP steps"]),
        "MP stops": st.column_config.TextColumn(help=USAGE_HELP["MP stops"])})
    points = table.dropna(subset=["FVU", "L0"])
    if in_chart.open and points.empty:
        in_chart.caption("No dictionary has FVU and L0 metrics yet (they are measured after training).")
    elif in_chart.open:
        fig = px.scatter(points, x="L0", y="FVU", color="arch", hover_name="name",
                         text="name" if len(points) <= MAX_POINT_LABELS else None,
                         hover_data={"FVU": ":.3f", "L0": ":.1f", "CE recovered": ":.3f", "d_sae": True, "hook": True,
                                     "arch": False, "name": False},
                         title="Reconstruction against sparsity (lower left is better)")
        fig.update_traces(marker={"size": 12}, textposition="top center")
        in_chart.plotly_chart(fig, width="stretch")

left, right = st.columns(2)
with left:
    st.subheader("Models")
    st.dataframe(pd.DataFrame([vars(m) for m in data.models]), hide_index=True, width="stretch")
with right:
    st.subheader("Corpora")
    st.dataframe(pd.DataFrame([vars(c) for c in data.corpora]), hide_index=True, width="stretch")

if data.analysed:
    st.subheader("Explore")
    page_link("browser", "Browse features", ":material/table_rows:")
    page_link("inspector", "Inspect a prompt", ":material/text_fields:")
    page_link("compare", "Compare two dictionaries", ":material/compare_arrows:")
