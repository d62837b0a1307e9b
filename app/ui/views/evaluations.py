"""Evaluations (/evaluations?dict=NAME&run=TASK-HOOK-seedS-editN): the task evaluations `sparsescope eval-task`
stored; the chosen one's model check, a chart of its axes for every learned dictionary evaluated alike with the
supervised dictionary as the reference and the edit floor as a baseline, a table of every figure, and the command
that reproduces it."""
import pandas as pd
import streamlit as st

from analysis.task_view import (
    command,
    comparable,
    evals_figure,
    figure_words,
    figures_table,
    model_check_words,
    row_format,
)
from app.ui.data import evaluations as data
from app.ui.widgets.common import md_escape, show_error
from store.errors import InputError

st.title("Evaluations")
evals, notes = data.evaluations()
for note in notes:
    st.warning(md_escape(note))
if not evals:
    st.info("No task evaluation yet: run `sparsescope eval-task ioi --dictionary NAME` on a dictionary of the "
            "workspace, then reload this page.")
    st.stop()
by_key = {(e.dictionary, e.run): e for e in evals}
names = sorted({e.dictionary for e in evals})
asked_dict, asked_run = st.query_params.get("dict"), st.query_params.get("run")
if asked_dict is not None and asked_dict not in names:
    show_error(InputError(f"no task evaluation of dictionary {asked_dict!r} (evaluated: {', '.join(names)})"))
if asked_run is not None:
    runs = [e.run for e in evals if e.dictionary == (asked_dict or names[0])]
    if asked_run not in runs:
        show_error(InputError(f"no evaluation {asked_run!r} of {asked_dict or names[0]} (stored: {', '.join(runs)})"))

left, right = st.columns(2)
name = left.selectbox("dictionary", names, index=names.index(asked_dict) if asked_dict else 0)
runs = [e.run for e in evals if e.dictionary == name]
run = right.selectbox("evaluation", runs, index=runs.index(asked_run) if asked_run in runs else 0)
st.query_params.update({"dict": name, "run": run})
picked = by_key[(name, run)]
peers = comparable(evals, picked)

st.markdown("**Model check**: " + md_escape(model_check_words(picked.result)))
st.caption(md_escape(figure_words(picked.result)))
st.plotly_chart(evals_figure(picked, peers), width="stretch", key=f"evals-{name}-{run}")
columns, rows = figures_table(picked, peers)
st.dataframe(pd.DataFrame([[label, *("-" if c is None else format(c, row_format(label)) for c in cells)]
                           for label, cells in rows], columns=["figure", *columns]),
             hide_index=True, width="stretch")
st.markdown("Reproduce it:")
st.code(command(picked), language="bash")
if len(peers) > 1:
    st.caption(md_escape("the other dictionaries' results come from their own runs: "
                         + "; ".join(command(e) for e in peers[1:])))
