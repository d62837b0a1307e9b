"""Steering page (/steering?dict=NAME&feature=ID&mode=MODE&describe=TEXT): default and steered text side by side as
they are generated, the measures, a strength sweep, steer by words, and the stored runs with a re-run button each.
MODE is add, clamp, ablate, orthogonal or cap; more interventions (features, decoder combinations, vector files)
apply in order after the first."""
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis.steering.config import MODES, POSITIONS
from analysis.steering.lab import Intervention, SteerConfig, Trigger
from analysis.steering.runs import dictionary_names, parse_stored
from app.ui.data import cache
from app.ui.data import steering as sc
from app.ui.widgets.common import asked_feature_of, md_escape, num, pct, show_error
from app.ui.widgets.report import steering_report_button
from app.ui.widgets.steer_more import interventions as more_specs
from app.ui.widgets.steer_more import more_interventions
from app.ui.widgets.steer_words import steer_by_words
from store.errors import InputError

BAD_INPUT = (InputError, ValueError)
rows = {d.name: d for d in cache.fetch(cache.overview).dictionaries}
names = sorted(rows)
if not names:
    st.info("No dictionary yet: train one with `sparsescope train` (or run `sparsescope demo`).")
    st.stop()
asked, asked_feature = asked_feature_of(names, known_as="known")
asked_mode = st.query_params.get("mode")
if asked_mode is not None and asked_mode not in MODES:
    show_error(InputError(f"unknown mode {asked_mode!r} (choose from {', '.join(MODES)})"))

st.title("Steering")
top = st.columns([3, 1, 2])
name = top[0].selectbox("dictionary", names, index=names.index(asked) if asked else 0)
feature = int(top[1].number_input("feature", min_value=0, value=asked_feature or 0, step=1,
                                  key=f"steer-feature-{name}-{asked_feature}"))
mode = top[2].segmented_control("mode", MODES, default=asked_mode or "add", required=True)
st.query_params.update({"dict": name, "feature": str(feature), "mode": mode})
prompt = st.text_area("prompt", "Tell me about your weekend.", max_chars=4000)
row = st.columns(4)
strength = row[0].slider("strength (x the feature's max activation; orthogonal: the factor)", -20.0, 20.0, 4.0, 0.5,
                         help="add: strength x max activation along the feature's decoder direction; clamp: the "
                              "value when none is given; orthogonal: x' = x + (strength - 1)(x.d)d")
positions = row[1].segmented_control("positions", POSITIONS, default="all", required=True)
value = row[2].number_input("value (clamp: raw, empty = strength x max act; cap: required)", value=None,
                            format="%.4g", help="cap: x' = x - max(0, x.d - value) d, d the unit decoder direction")
chat = row[3].toggle("chat template", value=True, help="off: raw completion")
row = st.columns(5)
seed = int(row[0].number_input("seed", min_value=0, value=0, step=1))
samples = int(row[1].number_input("samples", min_value=1, max_value=8, value=2, step=1))
max_new = row[2].slider("new tokens", 1, 128, 40)
temperature = row[3].slider("temperature (0: greedy)", 0.0, 2.0, 0.7, 0.05)
top_p = row[4].slider("top-p (nucleus)", 0.01, 1.0, 0.9, 0.01,
                      help="draw from the most likely tokens holding this much probability (1: all of them); both "
                           "arms draw the same random numbers")
with st.expander("Conditional: steer only where another feature fires"):
    cond = st.columns([1, 3, 1, 1])
    use_trigger = cond[0].checkbox("use a trigger")
    trigger_dict = cond[1].selectbox("trigger dictionary", names, index=names.index(name))
    trigger_feature = int(cond[2].number_input("trigger feature", min_value=0, value=0, step=1))
    threshold = cond[3].number_input("threshold", value=0.0, format="%.4g")
extra_rows = more_interventions()


def generation_config(specs: tuple, dictionary: str) -> SteerConfig:
    """The page's prompt and generation settings with `specs`, on the model of `dictionary`."""
    model = rows[dictionary].model if dictionary in rows else None
    return SteerConfig(prompt, specs, model=model or sc.DEFAULT_MODEL, chat=chat, max_new_tokens=max_new,
                       samples=samples, seed=seed, temperature=temperature, top_p=top_p)


def current_config() -> SteerConfig:
    trigger = Trigger(trigger_dict, trigger_feature, threshold) if use_trigger else None
    spec = Intervention(mode, dictionary=name, feature=feature, strength=strength, value=value,
                        positions=positions, trigger=trigger)
    more = more_specs(extra_rows, positions, lambda wanted: sc.dictionaries(rows, wanted), cache.workspace().root)
    return generation_config((spec, *more), name)


def show_measures(result) -> None:
    m = result.measures
    target = m["targets"][0]
    cols = st.columns(4)
    cols[0].metric("KL(steered \u2016 default) per token", f"{m['kl_mean']:.4f}")
    cols[1].metric("perplexity under the unsteered model", f"{m['perplexity_steered']:.2f}",
                   delta=f"{m['perplexity_steered'] - m['perplexity_default']:+.2f} vs default", delta_color="inverse")
    cols[2].metric(f"{md_escape(target['label'])} mean on the steered text", num(target["steered"]["mean"]),
                   delta=f"{target['steered']['mean'] - target['default']['mean']:+.4g} vs default")
    cols[3].metric("fires on steered / default tokens",
                   f"{pct(target['steered']['fired'])} / {pct(target['default']['fired'])}")
    if len(m["targets"]) > 1:
        st.dataframe(pd.DataFrame([(t["label"], t["default"]["mean"], t["steered"]["mean"], t["default"]["fired"],
                                    t["steered"]["fired"]) for t in m["targets"]],
                                  columns=["target", "mean default", "mean steered", "fires default", "fires steered"]),
                     hide_index=True, width="stretch")
    fig = go.Figure(go.Bar(y=m["kl_per_position"], hovertemplate="token %{x}: KL %{y:.4f}<extra></extra>"))
    fig.update_layout(xaxis_title="generated token", yaxis_title="KL", height=220, margin=dict(t=10, b=10))
    st.plotly_chart(fig, width="stretch")
    for note in result.notes:
        st.caption(md_escape(note))


def store(results: list, done: str, not_stored: str) -> None:
    """Store finished runs; `done` gets their ids. A busy store is a warning, a read-only one the page's error."""
    try:
        ids = [sc.record(result) for result in results]
    except cache.StoreBusy:
        st.warning(f"{cache.BUSY}; {not_stored}")
    except cache.ReadOnly:
        st.error(f"{cache.READ_ONLY}; {not_stored}")
    else:
        st.caption(done.format(", ".join(map(str, ids))))


def steer_and_show(config: SteerConfig, numbers=None):
    """Generate with both arms streaming into side-by-side slots, then measure and store the run."""
    slots: dict[str, list] = {}

    def show(step) -> None:
        if not slots:  # drawn at the first token: bad input leaves no empty columns behind
            left, right = st.columns(2)
            left.markdown("**default**")
            right.markdown("**steered**")
            slots.update(default=[left.empty() for _ in range(config.samples)],
                         steered=[right.empty() for _ in range(config.samples)])
        for arm, texts in step.texts.items():
            for slot, text in zip(slots[arm], texts):
                slot.code(text or " ", language=None, wrap_lines=True)

    try:
        result = sc.steer(config, sc.dictionaries(rows, dictionary_names(config)), numbers, on_step=show)
    except BAD_INPUT as exc:
        show_error(exc)
    show_measures(result)
    store([result], "stored as steering run {} \u00b7 `sparsescope steer --rerun` repeats it", "this run is not stored")
    return result


def steer_words(specs: tuple, dictionary: str):
    """Steer by words: the accepted features together, with the page's prompt and settings."""
    try:
        config = generation_config(specs, dictionary)
    except BAD_INPUT as exc:
        show_error(exc)
    return steer_and_show(config)


rerun_id = st.session_state.pop("steer_rerun", None)
if st.button("Steer", type="primary", icon=":material/tune:"):
    try:
        config = current_config()
    except BAD_INPUT as exc:
        show_error(exc)
    steer_and_show(config)
elif rerun_id is not None:
    stored = next((r for r in cache.fetch(sc.stored_runs) if r.id == rerun_id), None)
    if stored is not None:
        st.subheader(f"Re-run of run {rerun_id}")
        try:
            config, numbers = parse_stored(stored.config)
        except BAD_INPUT as exc:
            show_error(exc)
        steer_and_show(config, numbers)

with st.expander("Strength sweep: target activation and perplexity against strength"):
    strengths_text = st.text_input("strengths", "0,2,4,8")
    if st.button("Run sweep", icon=":material/show_chart:"):
        try:
            strengths = [float(s) for s in strengths_text.split(",") if s.strip()]
            config = current_config()
            dictionaries = sc.dictionaries(rows, dictionary_names(config))
            with st.spinner(f"generating at {len(strengths)} strengths..."):
                points = sc.sweep(config, dictionaries, strengths)
        except BAD_INPUT as exc:
            show_error(exc)
        fig = go.Figure([go.Scatter(x=[p.strength for p in points], y=[p.target_mean for p in points],
                                    name=f"{name}:{feature} mean activation", mode="lines+markers"),
                         go.Scatter(x=[p.strength for p in points], y=[p.perplexity for p in points],
                                    name="perplexity (unsteered model)", mode="lines+markers", yaxis="y2")])
        fig.update_layout(xaxis_title="strength", yaxis_title="target activation", height=320,
                          yaxis2=dict(title="perplexity", overlaying="y", side="right"), margin=dict(t=10, b=10))
        st.plotly_chart(fig, width="stretch")
        for point in points:
            st.caption(f"strength {point.strength:g}: {md_escape(point.result.steered_texts[0])}")
        store([p.result for p in points], "stored as runs {}", "the sweep is not stored")

steer_by_words(mode, positions, steer_words)

st.subheader("Stored runs")
runs = cache.fetch(sc.stored_runs)
if not runs:
    st.caption("no steering runs yet")
for stored in runs:
    cfg = stored.config
    what = ", ".join(f"{i['mode']} {i.get('dictionary') or 'direction'}:{i.get('feature')} "
                     + (f"at most {i.get('value')}" if i["mode"] == "cap" else f"x{i['strength']:g}")
                     for i in cfg.get("interventions", []))
    cols = st.columns([1, 7, 2, 1])
    cols[0].markdown(f"**#{stored.id}**")
    cols[1].caption(md_escape(f"{what} \u00b7 seed {cfg.get('seed')} \u00b7 \u201c{cfg.get('prompt', '')[:80]}\u201d"))
    cols[2].caption(f"KL {stored.measures.get('kl_mean', 0):.4f} \u00b7 "
                    f"ppl {stored.measures.get('perplexity_steered', 0):.1f}")
    if cols[3].button("Re-run", key=f"rerun-{stored.id}"):
        st.session_state["steer_rerun"] = stored.id
        st.rerun()
    steering_report_button(stored.id, cfg)
