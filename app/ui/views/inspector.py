"""Prompt inspector (/inspector?text=TEXT&dict=NAME&token=I&trace=NAME): type text, see every token coloured by its
strongest feature, pick a token for its features and, for an MP dictionary, its pursuit step by step."""
from pathlib import Path

import numpy as np
import streamlit as st

from app.ui.data import cache
from app.ui.data import inspector as di
from app.ui.widgets.common import (
    asked_dictionary,
    feature_link,
    int_param,
    md_escape,
    num,
    show_error,
    token_text,
    tokens_html,
    visible,
)
from app.ui.widgets.pursuit import pursuit_figure, pursuit_table
from store.errors import InputError

MAX_PILLS = 96  # longest prompt (in tokens) whose tokens are offered as pills (a page holds no bare strings:
# Streamlit's magic would show them)
SAMPLE = "The quick brown fox jumps over the lazy dog. Matching pursuit picks one atom at a time."

st.title("Prompt inspector")
data = cache.fetch(cache.overview)
sites: dict[tuple[str, str], list] = {}
for row in data.dictionaries:
    if row.model and row.hook and Path(row.path).is_dir():
        sites.setdefault((row.model, row.hook), []).append(row)
if not sites:
    st.info("No dictionary on disk with a known model and hook: train one with `sparsescope train` "
            "(or run `sparsescope demo`).")
    st.stop()

keys = sorted(sites)
site_of = {r.name: key for key, members in sites.items() for r in members}
asked = asked_dictionary(sorted(site_of), known_as="on disk with a model and hook")
try:
    asked_token = int_param("token", st.query_params.get("token"))
except InputError as exc:
    show_error(exc)
site = st.selectbox("site", keys, index=keys.index(site_of[asked]) if asked else 0,
                    format_func=lambda k: f"{k[0]} \u00b7 {k[1]} ({len(sites[k])} dictionaries)")
model_name, hook = site
rows = sites[site]
with st.form("prompt"):
    # a key: the URL's text, the box's default after each run, must not make a new widget that drops the next edit
    text = st.text_area("prompt", value=st.query_params.get("text", SAMPLE), height=100, max_chars=4000,
                        key="inspector-text")
    st.form_submit_button("Inspect", icon=":material/search:")
st.query_params["text"] = text
if not text.strip():
    st.info("Type some text and press Inspect.")
    st.stop()

spec = tuple((r.name, cache.stamp(r.path)) for r in rows)
result = cache.compute(cache.inspect, model_name, hook, spec, text)
if result.truncated:
    st.warning(f"the prompt is longer than the model's context: only its first {len(result.tokens)} tokens are read")

names = [r.name for r in rows]
colour_by = st.selectbox("colour tokens by the strongest feature of", names,
                         index=names.index(asked) if asked in names else 0)
reading = result.readings[colour_by]
ids, acts = reading.strongest()
analysed = colour_by in data.analysed
info = cache.fetch(cache.summaries, colour_by, tuple(sorted({int(i) for i in ids if i >= 0}))) if analysed else {}
# intensity: activation relative to the feature's largest activation on the analysis corpus (else the prompt's)
scales = np.array([info[i].max_act if i in info and info[i].max_act > 0 else max(acts.max(), 1e-9) for i in ids])
labels = {i: f" {s.label}" if s.label else "" for i, s in info.items()}
titles = [f"#{i}{labels.get(i, '')}: {a:.4g}" if i >= 0 else "no feature fires"
          for i, a in zip(ids, acts)]
st.html(tokens_html(result.tokens, acts / scales, 1.0, titles))
st.caption("hover a token for its strongest feature and activation; pick a token below for all its features")

first = 1 if result.has_bos and len(result.tokens) > 1 else 0  # BOS is an attention sink: never the default
default = int(first + np.argmax((acts / scales)[first:]))
if asked_token is not None and asked_token < len(result.tokens):  # a stale token of a longer text: the default
    default = asked_token
positions = list(range(len(result.tokens)))


def label(i: int) -> str:
    """A token as a pill: its position and its text, spaces shown as a glyph."""
    return f"{i}: {md_escape(visible(result.tokens[i]).replace(' ', chr(0x2423)))}"


if len(positions) <= MAX_PILLS:
    position = st.pills("token", positions, default=default, format_func=label)
else:  # hundreds of pills bury the page: a slider over positions instead
    position = st.select_slider("token", positions, value=default, format_func=label)
if position is None:
    st.stop()
st.query_params.update({"dict": colour_by, "token": str(position)})

st.html(f"<h3>Features on token {position}: \u201c{token_text(result.tokens[position])}\u201d</h3>")
columns = st.columns(len(names))
for column, name in zip(columns, names):
    with column:
        st.markdown(f"**{md_escape(name)}**")
        r = result.readings[name]
        fired = [(int(i), float(a)) for i, a in zip(r.ids[position], r.acts[position]) if i >= 0]
        if not fired:
            st.caption("no feature fires")
            continue
        labels = cache.fetch(cache.summaries, name, tuple(i for i, _ in fired)) if name in data.analysed else {}
        for feature, act in fired:
            tag = md_escape(labels[feature].label) if feature in labels else ""
            line = f"#{feature} \u00b7 {num(act)}" + (f" \u00b7 {tag}" if tag else "")
            if name in data.analysed:
                feature_link(name, feature, line)
            else:
                st.text(line)
        if name not in data.analysed:
            st.caption("not analysed yet: no feature pages")

st.subheader("Pursuit trace")
by_name = {r.name: r for r in rows}
pursuing = [n for n in names if di.has_pursuit(by_name[n].arch)]
asked_trace = st.query_params.get("trace")
if asked_trace is not None and asked_trace not in names:
    show_error(InputError(f"unknown dictionary {asked_trace!r} for the pursuit trace "
                          f"(on this site: {', '.join(names)})"))
fallback = colour_by if colour_by in pursuing else (pursuing or names)[0]
traced = st.selectbox("pursuit trace of", names, index=names.index(asked_trace or fallback))
st.query_params["trace"] = traced
if traced not in pursuing:
    others = f"MP dictionaries on this site: {', '.join(pursuing)}" if pursuing else "this site has none"
    st.info(md_escape(f"The pursuit trace applies to MP (matching pursuit) dictionaries: {traced} is a "
                      f"{by_name[traced].arch} dictionary ({others})."))
    st.stop()
trace = cache.compute(di.traces, model_name, hook, traced, cache.stamp(by_name[traced].path), text)[position]
if not trace.atoms:
    st.caption("pursuit chose no atom for this token (no positive correlation)")
    st.stop()
st.caption(f"{len(trace.atoms)} steps ({md_escape(trace.stop_reason)}): the residual norm falls from "
           f"{num(trace.input_norm)} to {num(trace.residual_norms[-1])}")
threshold = st.number_input("residual threshold (adaptive stop)", value=None, step=0.1, format="%g",
                            help="Where adaptive inference would stop this token: after the first step whose "
                                 "residual norm falls below this or whose atom repeats (`sparsescope analyze "
                                 "--residual-threshold`, `--option adaptive=true` in training).")
stop = None
if threshold is not None:
    try:
        stop = di.adaptive_stop(trace, threshold)
    except InputError as exc:
        show_error(exc)
    else:
        st.caption(f"adaptive inference with residual threshold {num(threshold)} stops after step {stop} of "
                   f"{len(trace.atoms)}")
st.plotly_chart(pursuit_figure(trace, threshold if stop is not None else None, stop), width="stretch")
linked = traced in data.analysed
found = cache.fetch(cache.summaries, traced, tuple(sorted(set(trace.atoms)))) if linked else {}
pursuit_table(traced, trace, {i: s.label for i, s in found.items()}, linked)
if not linked:
    st.caption("not analysed yet: no feature pages")
