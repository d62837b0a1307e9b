"""Search by text: type or paste text, see the features that fire most on it in every dictionary of a model; or
search features by the words of their explanations and labels (/search?words=...)."""
from pathlib import Path

import streamlit as st

from app.ui.data import cache
from app.ui.data import search as search_data
from app.ui.data.steering import DEFAULT_MODEL
from app.ui.widgets.common import feature_link, int_param, md_escape, num, pct, show_error, tokens_html
from app.ui.widgets.explanations import word_search
from store.errors import InputError

DEFAULT_TOP = 10
MAX_TOP = 50  # most features per dictionary the page lists (the CLI's --top goes further)
WINDOW = 40  # tokens shown on each side of a feature's strongest token when the text is longer than 2 * WINDOW
MODES = {"text": "features that fire on a text", "words": "features described by words"}

st.title("Search by text")
mode = st.segmented_control("search", list(MODES), format_func=MODES.get, required=True,
                            default="words" if "words" in st.query_params else "text")
if mode == "words":  # explanations and labels in the store: no model, no dictionary on disk needed
    word_search()
    st.stop()
for key in ("words", "dict"):  # the words mode's inputs
    st.query_params.pop(key, None)
data = cache.fetch(cache.overview)
by_model: dict[str, list] = {}
for row in data.dictionaries:
    if row.model and row.hook and Path(row.path).is_dir():
        by_model.setdefault(row.model, []).append(row)
if not by_model:
    st.info("No dictionary on disk with a known model and hook: train one with `sparsescope train` "
            "(or run `sparsescope demo`).")
    st.stop()

models = sorted(by_model)
asked_model = st.query_params.get("model")
if asked_model is not None and asked_model not in by_model:
    show_error(InputError(f"no dictionaries for model {asked_model!r} (models with dictionaries: "
                          f"{', '.join(models)})"))
try:
    asked_top = int_param("top", st.query_params.get("top"))
except InputError as exc:
    show_error(exc)
if asked_top is not None and not 1 <= asked_top <= MAX_TOP:
    show_error(InputError(f"top must be between 1 and {MAX_TOP} (got {asked_top})"))

first_model = asked_model or (DEFAULT_MODEL if DEFAULT_MODEL in by_model else models[0])
model = st.selectbox("model", models, index=models.index(first_model),
                     format_func=lambda m: f"{m} ({len(by_model[m])} dictionaries)")
rows = sorted(by_model[model], key=lambda r: r.name)
names = [r.name for r in rows]
asked_names = [n for n in st.query_params.get("dicts", "").split(",") if n] if model == first_model else []
unknown = [n for n in asked_names if n not in names]
if unknown:
    show_error(InputError(f"unknown dictionary {unknown[0]!r} (dictionaries of {model}: {', '.join(names)})"))

with st.form("search"):
    text = st.text_area("text", value=st.query_params.get("text", ""), height=120,
                        placeholder="Type or paste text; the features that fire most on it are listed per dictionary",
                        key="search-text")  # a key: the URL's text, its default after a search, is no new widget
    left, right = st.columns([4, 1])
    chosen = left.multiselect("dictionaries", names, default=asked_names or names)
    top = right.number_input("features per dictionary", 1, MAX_TOP, asked_top or DEFAULT_TOP)
    submitted = st.form_submit_button("Search", icon=":material/search:")

if submitted:  # the inputs go into the URL, so the view can be shared as a link
    st.query_params.update(text=text, model=model, top=str(int(top)))
    if set(chosen) == set(names):
        st.query_params.pop("dicts", None)
    else:
        st.query_params["dicts"] = ",".join(chosen)
if not submitted and "text" not in st.query_params:
    st.info("Type or paste text and press Search.")
    st.stop()
if not chosen:
    show_error(InputError("choose at least one dictionary"))

spec = tuple((r.name, r.hook, cache.stamp(r.path)) for r in rows if r.name in chosen)
result = search_data.annotate(cache.compute(search_data.search, model, spec, text, int(top)))
if result.truncated:
    st.warning(f"the text is longer than the model's context: only its first {len(result.tokens)} tokens are read")
first = 1 if result.has_bos else 0  # BOS is no part of the text: never shown, never ranked


def show_hit(dictionary: str, analysed: bool, hit) -> None:
    """One feature: a link to its page (when analysed), its numbers and label, the text with its firing tokens."""
    label = md_escape(hit.label) if hit.label else ""
    density = f" \u00b7 density {pct(hit.density)}" if hit.density is not None else ""
    title = f"#{hit.feature} \u00b7 max {num(hit.max_act)}{density}" + (f" \u00b7 {label}" if label else "")
    name_col, text_col = st.columns([2, 5])
    with name_col:
        if analysed:
            feature_link(dictionary, hit.feature, title)
        else:
            st.markdown(title)
    acts = [0.0] * len(result.tokens)
    for firing in hit.firings:
        acts[firing.position] = firing.activation
    peak = max(hit.firings, key=lambda f: f.activation).position
    lo = max(first, min(peak - WINDOW, len(acts) - 2 * WINDOW))
    hi = min(len(acts), lo + 2 * WINDOW + 1)
    titles = [f"{a:.4g}" for a in acts[lo:hi]]
    text_col.html(tokens_html(result.tokens[lo:hi], acts[lo:hi], hit.max_act, titles))


for hook, groups in result.by_hook().items():
    st.subheader(md_escape(hook))
    for group in groups:
        with st.container(border=True):
            note = "" if group.analysed else " \u00b7 not analysed yet: no feature pages"
            st.markdown(f"**{md_escape(group.dictionary)}**{note}")
            if not group.hits:
                st.caption("no feature fires on this text")
            for hit in group.hits:
                show_hit(group.dictionary, group.analysed, hit)
