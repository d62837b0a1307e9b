"""Feature browser: pick a dictionary, find features (by id, token, logit token, label, density, explanation score),
page through them. Score mode: /browser?dict=NAME&mode=score&score=EXPLAINER.SCORER.METRIC&min=X&order=asc."""
import pandas as pd
import streamlit as st

from app.ui.data import cache
from app.ui.data import explanations as ex
from app.ui.main import HERE
from app.ui.widgets.common import (
    analysed_names,
    asked_dictionary,
    feature_link,
    feature_url,
    float_param,
    int_param,
    md_escape,
    show_error,
    visible,
)
from app.ui.widgets.explanations import explain_hint, headline
from app.ui.widgets.report import report_download_button
from store.errors import InputError
from store.queries import ORDER_COLUMNS

PAGE_SIZE = 50
SCORE = "explanation score"
MODES = ["all", "id", "fires on token", "promotes token", "label", "density", SCORE]
MODE_HELP = {"fires on token": "features whose top examples fire on this token",
             "promotes token": "features whose decoder direction raises this token's logit most",
             "label": "labels and notes containing this text"}

st.title("Feature browser")
analysed = cache.fetch(cache.analysed)
names = analysed_names(analysed)
asked = asked_dictionary(names)
name = st.selectbox("dictionary", names, index=names.index(asked) if asked else 0)
st.query_params["dict"] = name
corpus, n_tokens = analysed[name]
st.caption(f"analysed on {n_tokens:,} tokens of corpus {md_escape(corpus)}")


def show_table(rows: list[dict], key: str) -> None:
    """Features as a table; selecting a row opens its feature page."""
    if not rows:
        st.info("No feature matches.")
        return
    frame = pd.DataFrame(rows)
    frame["open"] = [feature_url(name, f) for f in frame["feature"]]
    event = st.dataframe(frame, hide_index=True, width="stretch", key=key, on_select="rerun",
                         selection_mode="single-row", column_config={
                             "density": st.column_config.NumberColumn(format="percent"),
                             "open": st.column_config.LinkColumn("open", display_text="open"),
                             "top tokens": st.column_config.ListColumn("top tokens")})
    report_download_button(name, list(frame["feature"]), key=f"report-{key}")
    picked = event.selection.rows if event is not None and hasattr(event, "selection") else []
    if picked:
        st.switch_page(HERE / "views/feature.py",
                       query_params={"dict": name, "feature": str(int(frame["feature"].iloc[picked[0]]))})


def explained(rows: list[dict]) -> list[dict]:
    """The rows with an explanation column (empty for a feature not explained yet)."""
    found = cache.fetch(ex.texts, name, tuple(int(r["feature"]) for r in rows))
    return [{**r, "explanation": found.get(int(r["feature"]), "")} for r in rows]


def feature_rows(table: cache.FeatureTable) -> list[dict]:
    return explained([{"feature": r.feature, "density": r.density, "max act": r.max_act, "mean act": r.mean_act,
                       "top tokens": [visible(t) for t in table.top_tokens.get(r.feature, [])],
                       "label": r.label or ""} for r in table.rows])


def paged(lo: float, hi: float) -> None:
    left, mid, right = st.columns([2, 1, 1])
    order = left.selectbox("sort by", list(ORDER_COLUMNS), index=list(ORDER_COLUMNS).index("density"))
    descending = mid.toggle("descending", value=True)
    first = cache.fetch(cache.features_table, name, order, descending, PAGE_SIZE, 0, lo, hi)
    n_pages = max(1, -(-first.n_features // PAGE_SIZE))
    number = right.number_input(f"page (of {n_pages})", min_value=1, max_value=n_pages, value=1)
    table = first if number == 1 else cache.fetch(cache.features_table, name, order, descending, PAGE_SIZE,
                                                   (number - 1) * PAGE_SIZE, lo, hi)
    st.caption(f"{table.n_features:,} features; select a row to open it")
    show_table(feature_rows(table), "features")


def search_results(hits: list[tuple[int, float | None]], how: str) -> None:
    info = cache.fetch(cache.summaries, name, tuple(f for f, _ in hits), 3)
    rows = [{"feature": f, **({"score": score} if score is not None else {}),
             "density": info[f].density, "max act": info[f].max_act,
             "top tokens": [visible(t) for t in info[f].top_tokens], "label": info[f].label}
            for f, score in hits if f in info]
    st.caption(f"{len(rows)} features ({MODE_HELP[how]})")
    show_table(explained(rows), "hits")


def by_score() -> None:
    """Features ordered by one metric of their explanations, at least a minimum; the choice in the URL."""
    kinds = cache.fetch(ex.kinds, name)
    if not kinds:
        st.info(f"No explanation of {md_escape(name)} is scored yet: {explain_hint(name)} explains and scores "
                "every feature that fires.")
        return
    keys = [".".join(k) for k in kinds]
    try:
        asked_min = float_param("min", st.query_params.get("min"))
    except InputError as exc:
        show_error(exc)
    asked = st.query_params.get("score")
    if asked is not None and asked not in keys:
        show_error(InputError(f"unknown score {asked!r} for {name} (stored: {', '.join(keys)})"))
    first = asked or next((k for k, (_, sc, metric) in zip(keys, kinds) if metric == headline(sc)), keys[0])
    cols = st.columns([3, 1, 1, 1])
    key = cols[0].selectbox("score", keys, index=keys.index(first),
                            format_func=lambda k: " \u00b7 ".join(k.split(".")).replace("_", " "))
    low = cols[1].number_input("min score (empty: any)", value=asked_min, format="%.3f")
    descending = cols[2].toggle("best first", value=st.query_params.get("order") != "asc")
    st.query_params.update(mode="score", score=key, order="desc" if descending else "asc")
    if low is None:
        st.query_params.pop("min", None)
    else:
        st.query_params["min"] = str(low)  # repr: the link gives back the very number
    kind = tuple(key.split("."))
    first_page = cache.fetch(ex.scored, name, kind, low, descending, PAGE_SIZE, 0)
    n_pages = max(1, -(-first_page.total // PAGE_SIZE))
    number = cols[3].number_input(f"page (of {n_pages})", min_value=1, max_value=n_pages, value=1)
    scored = first_page if number == 1 else cache.fetch(ex.scored, name, kind, low, descending, PAGE_SIZE,
                                                        (number - 1) * PAGE_SIZE)
    info = cache.fetch(cache.summaries, name, tuple(r.feature for r in scored.rows), 3)
    rows = [{"feature": r.feature, "score": r.value, "baseline": r.baseline, "examples": r.n_examples,
             "density": info[r.feature].density, "top tokens": [visible(t) for t in info[r.feature].top_tokens],
             "label": info[r.feature].label} for r in scored.rows if r.feature in info]
    st.caption(f"{scored.total:,} features with this score" + ("" if low is None else f" of at least {low:g}")
               + "; baseline: another feature's explanation scored the same way; select a row to open it")
    show_table(explained(rows), "scored")


asked_mode = st.query_params.get("mode")
if asked_mode not in (None, "score"):
    show_error(InputError(f"unknown mode {asked_mode!r} (the URL takes mode=score)"))
top = st.columns([4, 1])
mode = top[0].segmented_control("find features", MODES, default=SCORE if asked_mode else "all") or "all"
if mode != SCORE:
    for param in ("mode", "score", "min", "order"):
        st.query_params.pop(param, None)
if top[1].button("random feature", icon=":material/casino:"):
    try:
        feature = cache.random_feature(name)
    except cache.StoreBusy:
        st.info(cache.BUSY)
        feature = None
    if feature is not None:
        st.switch_page(HERE / "views/feature.py", query_params={"dict": name, "feature": str(feature)})

if mode == "all":
    paged(0.0, 1.0)
elif mode == "id":
    raw = st.text_input("feature id", placeholder="e.g. 42")
    try:
        feature = int_param("feature id", raw.strip())
    except InputError as exc:
        show_error(exc)
    if feature is not None:
        info = cache.fetch(cache.summaries, name, (feature,), 3)
        if feature not in info:
            show_error(InputError(f"feature {feature} is out of range for {name}"))
        feature_link(name, feature, f"open feature #{feature}")
elif mode == SCORE:
    by_score()
elif mode == "density":
    left, right = st.columns(2)
    lo = left.number_input("density from (%)", 0.0, 100.0, 0.0, format="%.4f")
    hi = right.number_input("density to (%)", 0.0, 100.0, 100.0, format="%.4f")
    if lo > hi:
        show_error(InputError("the lower density bound is above the upper one"))
    paged(lo / 100, hi / 100)
else:
    text = st.text_input(mode, placeholder=MODE_HELP[mode])
    if text.strip():
        search_results(cache.fetch(cache.search, name, mode, text), mode)
