"""Feature page (/feature?dict=NAME&feature=ID): statistics, examples, logit effects, neighbours, label."""
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.ui.data import cache
from app.ui.widgets.common import (
    analysed_names,
    asked_feature_of,
    example_html,
    md_escape,
    num,
    page_link,
    pct,
    ranked_links,
    text_html,
    visible,
)
from app.ui.widgets.dfa import attention_output_block
from app.ui.widgets.explanations import feature_explanations
from app.ui.widgets.parity import dashboard_parity_block
from app.ui.widgets.report import report_download_button

analysed = cache.fetch(cache.analysed)
names = analysed_names(analysed)
asked, asked_feature = asked_feature_of(names)

left, right = st.columns([3, 1])
name = left.selectbox("dictionary", names, index=names.index(asked) if asked else 0)
feature = right.number_input("feature", min_value=0, value=asked_feature or 0, step=1,
                             key=f"feature-of-{name}-{asked_feature}")
st.query_params.update({"dict": name, "feature": str(feature)})
page = cache.fetch(cache.feature_page, name, int(feature))
card = page.card
arch = page.dictionary.arch if page.dictionary else "?"

st.html(f'<h2 style="margin:0">{text_html(name)} \u00b7 feature #{feature} '
        f'{text_html(card.label, "em") if card.label else ""}</h2>')
st.caption(f"{md_escape(arch)} dictionary, {page.n_features:,} features; statistics over {card.n_tokens:,} "
           f"tokens of corpus {md_escape(card.corpus)}")
cols = st.columns(6)
cols[0].metric("density", pct(card.density))
cols[1].metric("firings", f"{card.count:,}")
cols[2].metric("max act", num(card.max_act))
cols[3].metric("mean act", num(card.mean_act))
cols[4].metric("decoder norm", num(card.decoder_norm))
cols[5].metric("max decoder cos", num(card.max_decoder_cos))
feature_explanations(name, int(feature), card.label)  # explanations and their scores (sparsescope explain)
steer, export, _ = st.columns([1, 2, 1], vertical_alignment="center")
with steer:  # drawn only when a steering page is registered in app/ui/main.py
    page_link("steering", "Steer with this feature", ":material/tune:", dict=name, feature=feature)
with export:
    report_download_button(name, [int(feature)], key="report-feature")

hist, logits = st.columns([3, 2])
with hist:
    st.subheader("Activation histogram")
    if card.histogram:
        edges = [lo for lo, _, _ in card.histogram] + [card.histogram[-1][1]]
        counts = [c for _, _, c in card.histogram] + [card.histogram[-1][2]]
        fig = go.Figure(go.Scatter(x=edges, y=counts, line_shape="hv", fill="tozeroy", mode="lines",
                                   hovertemplate="from %{x:.4g}: %{y} firings<extra></extra>"))
        fig.update_layout(xaxis_type="log", xaxis_title="activation", yaxis_title="firings", height=300,
                          margin=dict(t=10, b=10))
        st.plotly_chart(fig, width="stretch")
    else:
        st.caption("never fires on the corpus")
with logits:
    st.subheader("Logit effects")
    up, down = st.columns(2)
    for column, title, entries in ((up, "promoted", card.promoted), (down, "suppressed", card.suppressed)):
        column.dataframe(pd.DataFrame({"token": [visible(e.text) if e.text else f"id {e.id}" for e in entries],
                                       "logit": [e.value for e in entries]}, columns=["token", "logit"]),
                         hide_index=True, width="stretch", column_config={"token": title})

st.subheader("Top activating contexts")
if not card.top_examples:
    st.caption("no examples stored")
for example in card.top_examples:
    st.html(example_html(example, card.max_act))
    st.caption(f"activation {example.activation:.4g} \u00b7 context {example.context_id}, "
               f"token {example.position}")

attention_output_block(page, int(feature))  # hook_z dictionaries only: head attribution and DFA
dashboard_parity_block(page, int(feature))  # vocabulary-wide logit histogram, neuron alignment, whole contexts

if card.quantile_examples:
    st.subheader("Samples across the activation range")
    bands = sorted({e.band for e in card.quantile_examples}, reverse=True)
    n_bands = max(bands) + 1
    for band in bands:
        members = [e for e in card.quantile_examples if e.band == band]
        lo, hi = band / n_bands * card.max_act, (band + 1) / n_bands * card.max_act
        with st.expander(f"activation {lo:.3g} to {hi:.3g} ({len(members)} samples)", expanded=band == bands[0]):
            for example in members:
                st.html(example_html(example, card.max_act))

near, cooc = st.columns(2)
with near:
    st.subheader("Decoder neighbours")
    ranked_links(name, card.decoder_neighbors, "cos")
with cooc:
    st.subheader("Co-occurring features")
    ranked_links(name, card.cooccurring, "jaccard")

if card.mp_steps:  # stored by the analysis of a dictionary that encodes by pursuit steps
    st.subheader("Matching pursuit")
    steps, parents = st.columns([3, 2])
    with steps:
        fig = go.Figure(go.Bar(x=[s.id + 1 for s in card.mp_steps], y=[s.value for s in card.mp_steps]))
        fig.update_layout(xaxis_title="pursuit step that chose this atom", yaxis_title="inputs", height=260,
                          margin=dict(t=10, b=10))
        st.plotly_chart(fig, width="stretch")
    with parents:
        st.caption("likely parents: atoms chosen at earlier steps of the same inputs")
        ranked_links(name, card.mp_parents, "inputs")
if page.has_codes:
    st.subheader("Code usage")
    st.write(f"chosen on {pct(card.density)} of tokens ({card.count:,} times); over the whole codebook "
             f"{pct(page.metrics.get('code_usage'))} of codes are used, code perplexity "
             f"{num(page.metrics.get('code_perplexity'))}.")
    st.caption("A code's activation on this page is its cosine similarity to the LayerNorm'd input where it is "
               "chosen (what the encoder ranks codes by); the output weighs every chosen code alike.")
    force, search = st.columns(2)
    with force:  # clamp with a positive value switches the code into the chosen set at every position
        page_link("steering", "Force this code in steering", ":material/bolt:", dict=name, feature=feature,
                  mode="clamp")
    with search:
        page_link("codes", "Search this codebook's codes by regex", ":material/manage_search:", dict=name)

st.subheader("Label")
with st.form(f"label-{name}-{feature}"):
    label = st.text_input("label", value=card.label, max_chars=200)
    notes = st.text_area("notes", value=card.notes, max_chars=5000)
    if st.form_submit_button("Save label", icon=":material/save:"):
        try:
            cache.save_label(name, int(feature), label.strip(), notes.strip())
        except cache.StoreBusy:
            st.warning(f"{cache.BUSY}; the label is not saved yet, save again in a moment")
        except cache.ReadOnly:
            st.error(f"{cache.READ_ONLY}; the label is not saved")
        else:
            st.toast("label saved")
            st.rerun()
