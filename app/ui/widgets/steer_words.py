"""Steer by words on the Steering page (/steering?describe=TEXT): the features whose explanations and labels match a
description (analysis.steering.describe), proposed with their strengths; the user accepts some, the page steers with
them together and says whether the steered text carries them more than the unsteered one.

    steer_by_words(mode, positions, run)      # run(interventions, dictionary) -> SteerResult: the page's own run
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import pandas as pd
import streamlit as st

from analysis.steering.describe import MAX_TOP, STRENGTH, TOP, Proposal, described_effect, interventions
from app.ui.data import cache
from app.ui.data import steering as sc
from app.ui.widgets.common import feature_link, int_param, md_escape, show_error
from store.errors import InputError


def _asked_top() -> int:
    try:
        top = int_param("top", st.query_params.get("top"))
    except InputError as exc:
        show_error(exc)
    if top is not None and not 1 <= top <= MAX_TOP:
        show_error(InputError(f"top must be between 1 and {MAX_TOP} (got {top})"))
    return top or TOP


def _proposed(proposal: Proposal) -> Proposal:
    """The proposal shown, one checkbox per feature; returns it with the accepted features only."""
    st.caption(f"searched: {md_escape(', '.join(proposal.words))} \u00b7 {len(proposal.features)} feature(s) of "
               f"{md_escape(proposal.dictionary)}, steered together; strength in units of each feature's max "
               "activation, the best match full strength, the others in proportion to their match")
    accepted = []
    for p in proposal.features:
        left, right = st.columns([2, 3])
        title = (f"{p.ref} \u00b7 strength {p.strength:.3g} x max act {p.max_act:.4g} = {p.amount:.4g} "
                 f"(match {p.match:.2f})")
        if left.checkbox(md_escape(title), value=True, key=f"accept-{proposal.description}-{p.ref}"):
            accepted.append(p)
        with right:
            feature_link(p.dictionary, p.feature, md_escape(f"open #{p.feature}" + (f" \u00b7 {p.label}" if p.label
                                                                                   else "")))
            if p.explanation:
                st.caption(f"{md_escape(p.explainer or '')}: {md_escape(p.explanation)}")
    return dataclasses.replace(proposal, features=tuple(accepted))


def _effect(result, proposal: Proposal) -> None:
    effect = described_effect(result, proposal)
    line = (f"the selected features' mean activation on the continuation: {effect.default_mean:.4g} unsteered, "
            f"{effect.steered_mean:.4g} steered")
    if effect.met:
        st.success(f"description met: {line}")
    else:
        st.warning(f"description not met: {line}")
    st.dataframe(pd.DataFrame(effect.per_feature, columns=["feature", "mean unsteered", "mean steered"]),
                 hide_index=True, width="stretch")


def steer_by_words(mode: str, positions: str, run: Callable[[tuple, str], object]) -> None:
    """The page's "Steer by words" section; `run(interventions, dictionary)` generates with the page's prompt and
    settings (streamed, measured, stored) and returns the SteerResult."""
    st.subheader("Steer by words")
    left, mid, right = st.columns([4, 1, 2])
    description = left.text_input("describe the text you want", value=st.query_params.get("describe", ""),
                                  max_chars=500, placeholder="e.g. python code",
                                  key="steer-describe")  # a key: a default changed by the URL is no new widget
    top = int(mid.number_input("features", 1, MAX_TOP, _asked_top()))
    strength = right.slider("strength of the best match (x its max activation)", 0.5, 20.0, STRENGTH, 0.5)
    if not description.strip():
        for key in ("describe", "top"):
            st.query_params.pop(key, None)
        st.caption("Describe what the steered text should be about: the features whose explanations "
                   "(`sparsescope explain`) or labels match it best are proposed, with their strengths.")
        return
    st.query_params.update(describe=description, top=str(top))
    proposal = cache.fetch(sc.proposal, description, top, float(strength))
    chosen = _proposed(proposal)
    if not st.button("Steer toward the description", icon=":material/auto_fix_high:"):
        return
    if not chosen.features:
        show_error(InputError("accept at least one proposed feature"))
    try:
        specs = interventions(chosen, mode, positions)
    except InputError as exc:
        show_error(exc)
    result = run(specs, chosen.dictionary)
    _effect(result, chosen)
