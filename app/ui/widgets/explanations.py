"""Explanations in the UI: a feature's explanations with their scores (feature page) and the search of features by
the words of their explanations and labels (the Search page's words mode).

    feature_explanations("topk-demo", 12, card.label)     # one block of the feature page
    word_search()                                         # /search?words=...

Every explanation, label and name is shown as text (md_escape): explanations quote tokens, which may hold any
Markdown or HTML.
"""
from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from analysis.explain.registry import SCORERS, scorer
from app.ui.data import cache
from app.ui.data import explanations as data
from app.ui.widgets.common import analysed_names, feature_link, md_escape, show_error
from store.errors import InputError
from store.explanations import ScoreRow

WORD_LIMIT = 50
"""Features the word search lists."""
_PLAIN_NAME = re.compile(r"^[\w.-]+$")


def headline(scorer_name: str) -> str | None:
    """The metric a scorer's summary shows (None for a scorer this version does not know, e.g. from a report)."""
    return scorer(scorer_name).headline if scorer_name in SCORERS else None


def score_line(score: ScoreRow) -> str:
    """e.g. "detection balanced accuracy 0.82 (baseline 0.50, 40 examples)" (Markdown-escaped)."""
    value = "undefined" if score.value is None else f"{score.value:.2f}"
    baseline = "none" if score.baseline is None else f"{score.baseline:.2f}"
    text = (f"{score.scorer} {score.metric.replace('_', ' ')} {value} "
            f"(baseline {baseline}, {score.n_examples:,} examples)")
    return md_escape(text)


def explain_hint(dictionary: str) -> str:
    """The command that explains a dictionary's features, as a Markdown code span."""
    return f"`sparsescope explain {dictionary if _PLAIN_NAME.match(dictionary) else 'DICT'}`"


def feature_explanations(dictionary: str, feature: int, label: str) -> None:
    """The feature page's block: the user's label (when there is one), then each explanation (by explainer) with
    its headline scores beside their baselines, every metric in an expander."""
    st.subheader("Explanations")
    if label:
        st.markdown(f"your label: *{md_escape(label)}*")
    found = cache.fetch(data.of_feature, dictionary, int(feature))
    if not found:
        st.caption(f"no explanation yet: {explain_hint(dictionary)} writes one for every feature that fires")
        return
    for item in found:
        st.markdown(f"**{md_escape(item.explainer)}**: {md_escape(item.text)}")
        tops = [s for s in item.scores if s.metric == (headline(s.scorer) or s.metric)]
        if tops:
            st.caption(" \u00b7 ".join(score_line(s) for s in tops))
        if len(item.scores) > len(tops):
            with st.expander(f"every score of the {md_escape(item.explainer)} explanation"):
                st.dataframe(pd.DataFrame([{"scorer": s.scorer, "metric": s.metric, "score": s.value,
                                            "baseline": s.baseline, "examples": s.n_examples} for s in item.scores]),
                             hide_index=True, width="stretch")
    st.caption("Scores on held-out examples; baseline: another feature's explanation scored the same way "
               "(what chance looks like).")


def word_search() -> None:
    """Features of every analysed dictionary whose explanations or labels contain some words, best first; the
    words and the dictionary in the URL (`words`, `dict`)."""
    names = analysed_names(cache.fetch(cache.analysed))
    everywhere = "every dictionary"
    asked_in = st.query_params.get("dict")
    if asked_in is not None and asked_in not in names:
        show_error(InputError(f"unknown dictionary {asked_in!r} (analysed: {', '.join(names)})"))
    choices = [everywhere, *names]
    with st.form("words"):
        left, right = st.columns([3, 1])
        words = left.text_input("words", value=st.query_params.get("words", ""), max_chars=500,
                                placeholder="words of an explanation or a label, e.g. Paris London",
                                key="search-words")  # a key: a default changed by the URL is no new widget
        where = right.selectbox("in", choices, index=choices.index(asked_in) if asked_in else 0)
        submitted = st.form_submit_button("Search", icon=":material/search:")
    if submitted:
        for key in ("text", "model", "dicts", "top"):
            st.query_params.pop(key, None)
        st.query_params["words"] = words
        if where == everywhere:
            st.query_params.pop("dict", None)
        else:
            st.query_params["dict"] = where
    if not words.strip():
        if submitted or "words" in st.query_params:
            show_error(InputError("type at least one word to look for in explanations and labels"))
        st.info("Type words and press Search: features whose explanations (`sparsescope explain`) or labels contain "
                "them, across dictionaries, most words found first.")
        return
    hits = cache.fetch(data.by_words, words, WORD_LIMIT, None if where == everywhere else where)
    if not hits:
        st.info(f"No explanation or label contains {md_escape(words.strip())!s}; explain more features with "
                f"{explain_hint(where if where != everywhere else 'DICT')}.")
        return
    st.caption(f"{len(hits)} features, most words found first (a word in your label before one only in an "
               "explanation, whole words before parts of words)")
    for hit in hits:
        with st.container(border=True):
            title = f"{hit.dictionary} #{hit.feature}" + (f" \u00b7 {hit.label}" if hit.label else "")
            feature_link(hit.dictionary, hit.feature, md_escape(title))
            if hit.explanation:
                st.caption(f"{md_escape(hit.explainer or '')}: {md_escape(hit.explanation)} \u00b7 "
                           f"match {hit.score:.2f}")
            else:
                st.caption(f"label only \u00b7 match {hit.score:.2f}")
