"""More interventions on the Steering page: several at once, each a feature, a combination of features' decoder
directions, or a vector file in the workspace, applied in order after the page's first one (as `steer` applies
repeated --feature options).

    rows = more_interventions()                                    # widgets; the rows as typed
    specs = interventions(rows, positions, load_dictionaries, root)   # InputError on bad input
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import streamlit as st

from analysis.steering.config import MODES, Intervention
from analysis.steering.directions import FORMS, combine, is_feature, parse_terms, read_vector
from app.ui.widgets.common import md_escape
from store.errors import InputError

MAX_MORE = 4
FIRST = 2
"""The page's own intervention is number 1."""


@dataclass(frozen=True)
class Row:
    target: str
    hook: str
    mode: str
    strength: float
    value: float | None


def more_interventions() -> list[Row]:
    """The section's widgets; returns what was typed, one Row per extra intervention."""
    with st.expander("More interventions: several at once, applied in order after the first"):
        st.caption(md_escape(f"Each target is {FORMS} inside the workspace (with its hook). A combination's "
                             "decoder directions are summed into one raw direction at their hook; each row has its "
                             "own mode, strength and value, and they share the page's positions."))
        count = int(st.number_input("more interventions", min_value=0, max_value=MAX_MORE, value=0, step=1))
        rows = []
        for i in range(FIRST, FIRST + count):
            cols = st.columns([3, 2, 2, 1, 1])
            rows.append(Row(cols[0].text_input(f"target {i}", key=f"more-target-{i}",
                                               placeholder="DICT:ID, 2*DICT:3 - DICT:7 or directions/v.npy"),
                            cols[1].text_input(f"hook {i} (a .npy file's)", key=f"more-hook-{i}",
                                               placeholder="blocks.6.hook_resid_post"),
                            cols[2].selectbox(f"mode {i}", MODES, key=f"more-mode-{i}"),
                            cols[3].number_input(f"strength {i}", value=4.0, step=0.5, key=f"more-strength-{i}"),
                            cols[4].number_input(f"value {i}", value=None, format="%.4g", key=f"more-value-{i}")))
    return rows


def _spec(row: Row, positions: str, dictionaries: Callable[[list[str]], dict], root: Path) -> Intervention:
    text = row.target.strip()
    if not text:
        raise InputError(f"it has no target: give {FORMS}")
    common = dict(mode=row.mode, strength=row.strength, value=row.value, positions=positions)
    feature = is_feature(text)
    if feature is not None:
        return Intervention(dictionary=feature[0], feature=feature[1], **common)
    if text.endswith(".npy"):
        if not row.hook.strip():
            raise InputError("a direction from a file needs its hook")
        return Intervention(direction=read_vector(text, root), hook=row.hook.strip(), **common)
    terms = parse_terms(text)
    vector, hook = combine(terms, dictionaries(sorted({name for _, name, _ in terms})))
    return Intervention(direction=vector, hook=hook, **common)


def interventions(rows: list[Row], positions: str, dictionaries: Callable[[list[str]], dict],
                  root: Path) -> tuple[Intervention, ...]:
    """The rows as Interventions; `dictionaries(names)` loads SteerDictionaries for combinations, `root` confines
    vector files. InputError names the row."""
    specs = []
    for number, row in enumerate(rows, start=FIRST):
        try:
            specs.append(_spec(row, positions, dictionaries, root))
        except (InputError, ValueError) as exc:
            raise InputError(f"intervention {number}: {exc}") from None
    return tuple(specs)
