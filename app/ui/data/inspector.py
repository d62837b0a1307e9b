"""The model calls of the prompt inspector beyond cache.inspect: the pursuit trace of an MP dictionary."""
from __future__ import annotations

import streamlit as st

from app.ui.data import cache


def has_pursuit(arch: str) -> bool:
    """The stored architecture `arch` encodes by pursuit steps (an MP dictionary)."""
    from sae.dictionaries import lookup

    return lookup(arch).has_pursuit_steps


@st.cache_data(show_spinner="tracing the pursuit...", max_entries=32)
def traces(model_name: str, hook: str, name: str, stamp: int, text: str) -> list:
    """analysis.features.pursuit.PursuitTrace of every token of `text` by the MP dictionary `name`."""
    from analysis.features.inspector import trace_prompt

    sae = cache.dictionary(name, stamp)
    with cache.using_model(model_name) as lm:
        return trace_prompt(lm, hook, text, sae)


def adaptive_stop(trace, threshold: float) -> int:
    """analysis.features.pursuit.adaptive_stop: steps adaptive inference would take (InputError below 0)."""
    from analysis.features.pursuit import adaptive_stop as stop_at

    return stop_at(trace, threshold)
