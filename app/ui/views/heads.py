"""Heads page (/heads?model=M&corpus=C&score=S&layer=L&head=H&prompt=TEXT&target=T&clean=..&corrupted=..&answer=A
&wrong=B): head scores, patterns, ablation, ranking and activation patching."""
import pandas as pd
import streamlit as st

from analysis.heads.ablation import MODES
from analysis.heads.prompt import top_sources
from analysis.heads.scores import SCORES
from app.ui.data import cache
from app.ui.data import heads as heads_cache
from app.ui.widgets.common import int_param, md_escape, show_error
from app.ui.widgets.heads import (
    COMPACT_AFTER,
    context_html,
    pattern_figure,
    ranking_figure,
    score_grid_figure,
    top_sources_rows,
)
from app.ui.widgets.patching import KEYS as PATCH_KEYS
from app.ui.widgets.patching import patching_inputs, show_patching
from app.ui.widgets.report import heads_report_button
from store.errors import InputError

SAMPLE = "The cat sat on the mat. The cat sat on the"

st.title("Attention heads")
runs = cache.fetch(heads_cache.runs)
if not runs:
    st.info("No head scores yet: run `sparsescope heads --model M --corpus C` (or `sparsescope demo`).")
    st.stop()
params = st.query_params
try:
    asked_layer, asked_head = int_param("layer", params.get("layer")), int_param("head", params.get("head"))
except InputError as exc:
    show_error(exc)
keys = [(r.model, r.corpus) for r in runs]
asked = (params.get("model"), params.get("corpus"))
if params.get("model") and asked not in keys:
    show_error(InputError(f"no head scores for model {asked[0]!r} on corpus {asked[1]!r} "
                          f"(stored: {', '.join(f'{m} / {c}' for m, c in keys)})"))
top = st.columns([2, 1])
run = runs[top[0].selectbox("model / corpus", range(len(runs)), index=keys.index(asked) if asked in keys else 0,
                                format_func=lambda i: f"{runs[i].model} / {runs[i].corpus}")]
names = list(SCORES)
score = top[1].selectbox("score", names, index=names.index(params["score"]) if params.get("score") in names else 0,
                         help="\n".join(f"- **{k}**: {v}" for k, v in SCORES.items()))
for value, name, limit in ((asked_layer, "layer", run.n_layers), (asked_head, "head", run.n_heads)):
    if value is not None and value >= limit:
        show_error(InputError(f"{name} {value} is out of range: {run.model} has {name}s 0..{limit - 1}"))
layer, head = asked_layer or 0, asked_head or 0
st.caption(f"{run.n_layers} layers x {run.n_heads} heads sharing {run.n_kv_heads} KV groups; scores over "
           f"{run.n_tokens:,} tokens of {md_escape(run.corpus)}. Click a cell to open its head.")
heads_report_button(run.model)

grid = cache.fetch(heads_cache.grid, run.model, run.corpus, score, (run.n_layers, run.n_heads))
event = st.plotly_chart(score_grid_figure(grid, score, run.n_kv_heads, (layer, head)), width="stretch",
                        on_select="rerun", selection_mode="points", key=f"grid-{run.model}-{run.corpus}-{score}")
points = event.selection.points if event and event.selection else []
if points:
    clicked = (int(points[0]["y"]), int(points[0]["x"]))
    if clicked != st.session_state.get("heads-click") and clicked != (layer, head):
        st.session_state["heads-click"] = clicked  # the selection persists across runs: act on it once
        st.query_params.update({"layer": clicked[0], "head": clicked[1]})
        st.rerun()  # redraw the grid with the new head outlined
pick = st.columns(2)
layer = pick[0].selectbox("layer", range(run.n_layers), index=layer, key=f"layer-{layer}")
head = pick[1].selectbox("head", range(run.n_heads), index=head, key=f"head-{layer}-{head}")
group = head // (run.n_heads // run.n_kv_heads)
st.query_params.update({"model": run.model, "corpus": run.corpus, "score": score, "layer": layer, "head": head})

st.header(f"Head {layer}.{head} \u00b7 KV group {group}")
info = cache.fetch(heads_cache.detail, run.model, run.corpus, layer, head)
cols = st.columns(4)
for i, name in enumerate(names):
    if name in info.scores:
        cols[i % 4].metric(name, f"{info.scores[name]:.3f}", help=SCORES[name])

# keys: the URL holds the prompt and target, the boxes' defaults; a changed default must not make a new widget
prompt = st.text_area("prompt", value=params.get("prompt", SAMPLE), height=80, max_chars=8000, key="heads-prompt")
if not prompt.strip():
    st.error("the prompt is empty")
    st.stop()
st.query_params["prompt"] = prompt
tab_pattern, tab_contexts, tab_ablate, tab_rank, tab_patch = st.tabs(
    ["Pattern", "Top contexts", "Ablation", "Which heads matter", "Activation patching"])

with tab_pattern:
    result = cache.compute(heads_cache.pattern, run.model, prompt, layer, head)
    n = len(result.tokens)
    first = 0
    if n > COMPACT_AFTER:
        shown = st.slider("destinations shown (the last N)", 5, n, COMPACT_AFTER)
        first = n - shown
        st.caption(f"{n} tokens: compact view of the last {shown} destinations")
    st.plotly_chart(pattern_figure(result.tokens, result.pattern, first), width="stretch")
    with st.expander("strongest sources per destination"):
        st.dataframe(pd.DataFrame(top_sources_rows(result.tokens, top_sources(result.pattern), first)),
                     hide_index=True, width="stretch")

with tab_contexts:
    st.caption("contexts where this head's attention is most concentrated away from the first token (mean over "
               "destinations of the largest non-first weight); shade = that peak weight, hover for its source")
    if not info.examples:
        st.caption("no contexts stored")
    for example in info.examples:
        tokens = heads_cache.str_tokens(run.model, tuple(info.example_tokens[example.context_id]))
        st.html(context_html(tokens, example.peak_weight, example.peak_src))
        st.caption(f"context {example.context_id} \u00b7 score {example.score:.3f}")

with tab_ablate:
    mode = st.radio("ablation", MODES, horizontal=True, help="zero: z = 0; mean: z = its corpus mean; path: only "
                    "the head's direct path to the logits is removed (later layers still read it)")
    rows = cache.fetch(heads_cache.means, run.model, run.corpus) if mode == "mean" else None
    ab = cache.compute(heads_cache.ablation, run.model, prompt, layer, head, mode, rows)
    if ab.loss_clean is not None:
        m = st.columns(3)
        m[0].metric("loss clean", f"{ab.loss_clean:.4f}")
        m[1].metric("loss ablated", f"{ab.loss_ablated:.4f}", f"{ab.loss_ablated - ab.loss_clean:+.4f}",
                    delta_color="inverse")
    left, right = st.columns(2)
    for column, title, preds in ((left, "clean top predictions", ab.top_clean),
                                 (right, "ablated top predictions", ab.top_ablated)):
        column.caption(title)
        column.dataframe(pd.DataFrame({"token": [repr(p.token) for p in preds],
                                       "p clean": [p.prob_clean for p in preds],
                                       "p ablated": [p.prob_ablated for p in preds]}),
                         hide_index=True, width="stretch")

with tab_rank:
    target = st.text_input("target next token (empty: the model's top prediction)", value=params.get("target", ""),
                           key="heads-target")
    if target:
        st.query_params["target"] = target
    else:
        st.query_params.pop("target", None)
    if st.toggle("rank every head (zero-ablation, one batch per layer)", key="heads-rank"):
        ranked = cache.compute(heads_cache.ranking, run.model, prompt, target)
        st.caption(md_escape(f"target {ranked.target!r} after {ranked.tokens[ranked.position]!r}: logit "
                             f"{ranked.clean_logit:.3f}, p {ranked.clean_prob:.3f}"))
        st.plotly_chart(ranking_figure(ranked.effects, run.n_layers, run.n_heads), width="stretch")
        st.dataframe(pd.DataFrame([{"layer": e.layer, "head": e.head, "KV group": e.kv_group,
                                    "logit change": e.logit_delta, "p ablated": e.prob_ablated}
                                   for e in ranked.effects[:25]]), hide_index=True, width="stretch")

with tab_patch:  # last: bad input here stops the page with one st.error, after every other tab is drawn
    inputs, run_now = patching_inputs(params)
    if run_now:
        show_patching(cache.compute(heads_cache.patching, run.model, *(inputs[k] for k in PATCH_KEYS)))
    else:
        st.caption("a clean and a corrupted prompt of the same length, the answer the clean prompt should get and "
                   "the one the corrupted prompt gets; Patch runs a forward pass per head and per layer x position")
