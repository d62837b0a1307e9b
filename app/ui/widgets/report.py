"""The "Export report" control the feature, browser, steering and heads pages share.

    report_download_button("topk-demo", [12, 40])          # feature page, browser: one line each
    steering_report_button(run.id, run.config)              # a stored steering run
    heads_report_button(model)                              # heads page: head scores + a dictionary

A format picker and a download button. The report is built only when the button is clicked (Streamlit runs a
callable `data` on click, on its own thread), read through the UI's shared read-only instance
(app/ui/data/readers.py: a second DuckDB instance in this process would clash with it) and cached per store
version like every query of app/ui/data (app/ui/data/reports.py), so a second click on an unchanged store costs nothing.
"""
from __future__ import annotations

from typing import Sequence

import streamlit as st

from analysis.reports import FORMATS, MIME
from analysis.reports.browser import find_browser
from app.ui.data import cache
from app.ui.data.reports import model_dictionaries, report_file
from app.ui.widgets.common import md_escape

MAX_FEATURES = 200
"""Largest selection the button exports (a bigger report belongs to `sparsescope report`)."""
LABELS = {"html": "HTML", "md": "Markdown + PNG (zip)", "json": "JSON", "pdf": "PDF"}
SUFFIX = {"html": "html", "md": "zip", "json": "json", "pdf": "pdf"}


def available_formats() -> list[str]:
    """PDF and Markdown's PNG figures need a local Chromium; without one, offer what works."""
    return list(FORMATS) if find_browser() else [f for f in FORMATS if f not in ("pdf", "md")]


def report_download_button(dictionary: str, features: Sequence[int] | None, fmt: str = "html", *,
                           steering: Sequence[str | int] = (), heads: bool = False, top: int = 10,
                           label: str = "Export report", key: str | None = None, picker: bool = True) -> None:
    """Format picker + download button for a report on `features` of `dictionary` (None: its `top` densest),
    with steering runs and head scores when asked."""
    ids = None if features is None else tuple(dict.fromkeys(int(f) for f in features))
    if ids is not None and not ids:
        st.caption("Select features to export a report.")
        return
    if len(ids or ()) > MAX_FEATURES:
        st.caption(f"Reports from the UI hold at most {MAX_FEATURES} features; "
                   f"use `sparsescope report {dictionary} --top N` for more.")
        return
    runs = tuple(str(r) for r in steering)
    key = key or f"report-{dictionary}-{hash(ids)}-{'-'.join(runs)}"
    formats = available_formats()
    chosen = fmt if fmt in formats else formats[0]
    button = st
    if picker:
        left, button = st.columns([1, 2], vertical_alignment="bottom")
        chosen = left.selectbox("format", formats, index=formats.index(chosen), format_func=LABELS.get,
                                key=f"{key}-fmt", label_visibility="collapsed")
    db = str(cache.workspace().db_path)
    name = dictionary + (f"-{ids[0]}" if ids else "") + (f"-and-{len(ids) - 1}-more" if ids and len(ids) > 1 else "")
    button.download_button(
        label, data=lambda: report_file(db, cache.version(db), dictionary, ids, chosen, runs, heads, top),
        file_name=f"{name}.{SUFFIX[chosen]}", mime=MIME[chosen], icon=":material/description:",
        key=f"{key}-button", on_click="ignore")


def steering_report_button(run_id: int, config: dict, key: str | None = None) -> None:
    """Report on the features a stored steering run steers (those of its first dictionary), with the run."""
    targets = [(i["dictionary"], int(i["feature"])) for i in config.get("interventions", [])
               if i.get("dictionary") and i.get("feature") is not None]
    if not targets:
        return  # raw directions only: no dictionary to report on
    dictionary = targets[0][0]
    report_download_button(dictionary, [f for d, f in targets if d == dictionary], steering=[run_id],
                           label="Report", key=key or f"report-run-{run_id}", picker=False)


def heads_report_button(model: str, key: str | None = None) -> None:
    """Report with the model's head scores and the densest features of one of its dictionaries (an
    attention-output one when there is one, since its features carry head attribution)."""
    found = cache.fetch(model_dictionaries, model)
    if not found:
        st.caption(f"Reports need an analysed dictionary of {md_escape(model)}.")
        return
    dictionary = next((d for d, hook in found if "hook_z" in hook), found[0][0])
    report_download_button(dictionary, None, heads=True, label=f"Export report ({md_escape(dictionary)} + head scores)",
                           key=key or f"report-heads-{model}")
