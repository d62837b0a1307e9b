"""Jobs (/jobs?command=NAME): start a `sparsescope` command from a form, watch its progress and log, cancel it, and
see past jobs with their outcome. Each job is its own process (app/jobs/); its state lives in the store."""
import shlex

import pandas as pd
import streamlit as st

from app.jobs.forms import COMMANDS, Field, fields
from app.ui.data import cache
from app.ui.data import jobs as data
from app.ui.widgets.common import md_escape
from store.errors import InputError


def field_widget(command: str, field: Field):
    key = f"job-{command}-{field.name}"
    label = field.label + (" *" if field.required else "")
    if field.kind == "flag":
        return st.checkbox(label, value=bool(field.default), help=field.help, key=key)
    if field.choices:
        options = ([] if field.required else [""]) + list(field.choices)
        index = options.index(field.default) if field.default in options else 0
        return st.selectbox(label, options, index=index, help=field.help, key=key)
    shown = "" if field.default is None else str(field.default)
    hint = "comma-separated" if field.kind == "list" else shown or None
    return st.text_input(label, value=shown if field.kind != "list" else "", placeholder=hint, help=field.help,
                         key=key)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def command_line(job) -> str:
    return "sparsescope " + " ".join(shlex.quote(a) for a in job.argv)


def show_running(item: data.Running) -> None:
    job, done = item.job, item.progress
    with st.container(border=True):
        left, right = st.columns([5, 1], vertical_alignment="center")
        left.markdown(f"**{md_escape(job.status)}** · `{md_escape(job.id)}` · {md_escape(command_line(job))}")
        if right.button("Cancel", key=f"cancel-{job.id}", icon=":material/cancel:"):
            data.cancel(job)
            st.session_state.setdefault("jobs_cancelling", set()).add(job.id)
        if job.id in st.session_state.get("jobs_cancelling", ()):
            st.caption("cancelling: the command got SIGINT and stops cleanly (SIGKILL if it has not in 20 s)")
        if done is not None and done.fraction is not None:
            eta = duration(done.eta_s) if done.eta_s is not None else "?"
            text = f"{done.desc}: {done.n:,.0f} / {done.total:,.0f} {done.unit}, ETA {eta}"
            st.progress(done.fraction, text=md_escape(text))
        else:
            st.caption(f"running for {duration(job.seconds)}" if job.started else "starting")
        st.code(item.log or "(no output yet)", language=None)


def running_jobs() -> None:
    active = data.running()
    was = st.session_state.get("jobs_active", set())
    now = {item.job.id for item in active}
    st.session_state["jobs_active"] = now
    if was - now:  # a job ended: its results show on every page, and this page lists it as past
        data.results_changed()
        st.rerun()
    for item in active:
        show_running(item)


st.title("Jobs")
st.caption("Each job runs one `sparsescope` command in its own process (one torch thread), writes to the store as "
           "the CLI does, and keeps running when the browser closes. Logs: WORKSPACE/jobs/ID/log.txt.")
asked = st.query_params.get("command")
command = st.selectbox("command", COMMANDS, index=COMMANDS.index(asked) if asked in COMMANDS else 0)
st.query_params["command"] = command
form = fields(command)
with st.form(f"job-{command}"):
    columns = st.columns(3)
    values = {}
    for n, field in enumerate(form):
        with columns[n % 3]:
            values[field.name] = field_widget(command, field)
    submitted = st.form_submit_button("Start", icon=":material/play_arrow:")
if submitted:
    try:
        job = data.start(command, values)
    except InputError as exc:
        st.error(md_escape(str(exc)))
    except cache.StoreBusy:
        st.info(cache.BUSY + "; start the job again in a moment")
    except cache.ReadOnly as exc:
        st.info(str(exc))
    else:
        st.success(md_escape(f"started job {job.id}: {command_line(job)}"))

rows = data.jobs()
if any(job.active for job in rows):
    st.subheader("Running")
    st.fragment(run_every=data.POLL_S)(running_jobs)()
past = [job for job in rows if not job.active]
st.subheader("Past jobs")
if not past:
    st.info("No finished job yet.")
    st.stop()
st.dataframe(pd.DataFrame({
    "job": [j.id for j in past], "command": [command_line(j) for j in past], "outcome": [j.status for j in past],
    "exit code": [j.exit_code for j in past], "duration": [duration(j.seconds) for j in past],
    "started (UTC)": [j.started or j.created for j in past], "message": [j.message or "" for j in past]}),
    hide_index=True, width="stretch")
chosen = st.selectbox("log of", [j.id for j in past], key="jobs-log")
st.code(data.log_tail(next(j for j in past if j.id == chosen), 40) or "(empty log)", language=None)
