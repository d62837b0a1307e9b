"""Code search (/codes?dict=NAME&regex=RE&tokens=N): the codes of a codebook dictionary that are chosen where the
token matches a regular expression, ranked by precision with recall and counts (as `sparsescope codes`)."""
import pandas as pd
import streamlit as st

from app.ui.data import cache
from app.ui.data import codes as dc
from app.ui.widgets.common import asked_dictionary, feature_url, int_param, md_escape, show_error
from store.errors import InputError

st.title("Code search")
data = cache.fetch(cache.overview)
corpora = {c.name: c for c in data.corpora}
rows = {r.name: r for r in data.dictionaries if dc.has_codes(r.arch) and r.name in data.analysed and r.model
        and r.hook and data.analysed[r.name][0] in corpora}
if not rows:
    st.info("No analysed codebook dictionary yet: train one with `sparsescope train --arch codebook` and analyse it "
            "with `sparsescope analyze` (or run `sparsescope demo`).")
    st.stop()
names = sorted(rows)
asked = asked_dictionary(names, known_as="analysed codebook dictionaries")
try:
    asked_tokens = int_param("tokens", st.query_params.get("tokens"))
except InputError as exc:
    show_error(exc)
if asked_tokens is not None and asked_tokens not in dc.TOKEN_BUDGETS:
    show_error(InputError(f"tokens must be one of {', '.join(map(str, dc.TOKEN_BUDGETS))}, got {asked_tokens}"))

name = st.selectbox("dictionary", names, index=names.index(asked) if asked else 0)
row = rows[name]
corpus = corpora[data.analysed[name][0]]
with st.form("code-search"):
    left, right = st.columns([3, 2], vertical_alignment="bottom")
    regex = left.text_input("regular expression over the token text (Python re, searched anywhere in the token)",
                            value=st.query_params.get("regex", ""), max_chars=500, placeholder=r"^\s?\d+$",
                            key="codes-regex")  # a key: the URL's regex, its default after a search, is no new widget
    tokens = right.select_slider("corpus tokens read", dc.TOKEN_BUDGETS, value=asked_tokens or dc.TOKEN_BUDGETS[1],
                                 format_func=lambda n: f"{n:,}")
    st.form_submit_button("Search", icon=":material/search:")
st.query_params.update({"dict": name, "regex": regex, "tokens": str(tokens)})
if not regex:
    st.info("Type a regular expression: the codes chosen on tokens that match it come first (e.g. `^\\s?\\d+$` for "
            "numbers).")
    st.stop()

matches = cache.fetch(dc.search, row.model, row.hook, name, cache.stamp(row.path), corpus.name, corpus.ctx, tokens,
                      regex)
read = min(tokens, corpus.n_tokens)
st.caption(md_escape(f"over the first {read:,} tokens of corpus {corpus.name} (whole contexts of {corpus.ctx}); "
                     "precision: the share of a code's positions whose token matches; recall: the share of matching "
                     "positions where the code is chosen"))
if not matches:
    st.info(md_escape(f"no code of {name} is chosen on tokens matching /{regex}/ (or no token matches it)"))
    st.stop()
labels = cache.fetch(cache.summaries, name, tuple(sorted(m.code for m in matches)))
frame = pd.DataFrame({
    "code": [feature_url(name, m.code) for m in matches],
    "precision": [m.precision for m in matches], "recall": [m.recall for m in matches],
    "positions": [m.n_active for m in matches],
    "on matches": [round(m.precision * m.n_active) for m in matches],
    "label": [labels[m.code].label if m.code in labels else "" for m in matches],
    "promotes": [labels[m.code].top_tokens if m.code in labels else [] for m in matches]})
st.dataframe(frame, hide_index=True, width="stretch", column_config={
    "code": st.column_config.LinkColumn("code", display_text=r"feature=(\d+)", help="opens the code's feature page"),
    "precision": st.column_config.NumberColumn(format="%.3f"), "recall": st.column_config.NumberColumn(format="%.3f"),
    "positions": st.column_config.NumberColumn(help="positions where the code is chosen"),
    "on matches": st.column_config.NumberColumn(help="of those, positions whose token matches"),
    "promotes": st.column_config.ListColumn("promotes", help="tokens the code promotes most")})
