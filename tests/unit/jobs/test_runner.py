"""Real job processes, started as the Jobs page starts them (store row, then the wrapper): a job runs to its end;
a cancel stops training with a checkpoint; a killed command, a killed wrapper and a refused command each end with
the outcome they should. The training jobs take 10-20 s each on a busy machine (torch's import in a fresh
process): they are `slow`; `dicts` (no torch) keeps the whole path in the fast suite."""
from __future__ import annotations

import os
import signal
import time

import pytest

from app.jobs import launch
from store import jobs as repo
from store import session
from tests.fault_workspace import CACHE

pytestmark = pytest.mark.usefixtures("one_thread")
slow = pytest.mark.slow
TRAIN = ["train", "--arch", "topk", "--activations", CACHE, "--d-sae", "64", "--k", "4", "--batch", "128",
         "--lr", "0.01"]
WAIT_S = 180


def _start(ws, argv) -> repo.Job:
    with session(ws.db_path) as con:
        job = launch.create(con, ws, argv)
    launch.spawn(ws, job)
    return job


def _get(ws, job_id) -> repo.Job:
    with session(ws.db_path) as con:
        return repo.get_job(con, job_id)


def _wait(ws, job_id, until, what: str) -> repo.Job:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        job = _get(ws, job_id)
        if until(job):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id}: no {what} in {WAIT_S} s; log:\n{launch.log_tail(job.log_path)}")


def _ended(ws, job_id) -> repo.Job:
    return _wait(ws, job_id, lambda j: not j.active, "outcome")


def _training(ws, job_id) -> repo.Job:
    """The job once its training loop has made progress (its progress channel says so)."""
    return _wait(ws, job_id, lambda j: j.pid is not None and (launch.progress(j) or _none()).n > 0 or not j.active,
                 "progress")


class _none:
    n = 0


def _dictionaries(ws) -> list[str]:
    with session(ws.db_path) as con:
        return [r[0] for r in con.execute("SELECT name FROM dictionaries ORDER BY name").fetchall()]


def test_a_quick_job_runs_through_the_wrapper_and_records_exit_0(jobs_ws):
    job = _ended(jobs_ws, _start(jobs_ws, ["dicts"]).id)
    assert (job.status, job.exit_code, job.message, job.progress) == ("finished", 0, None, None)
    assert job.pid and job.pgid and job.pid != job.pgid and job.started <= job.finished
    assert "tk" in launch.log_tail(job.log_path)  # the command's own output, in the job's log
    assert not launch.lost(job)


@slow
def test_a_job_runs_to_its_end_and_records_exit_0(jobs_ws):
    job = _start(jobs_ws, [*TRAIN, "--tokens", "1024", "--name", "done"])
    assert _get(jobs_ws, job.id).status in ("queued", "running")
    job = _ended(jobs_ws, job.id)
    assert (job.status, job.exit_code, job.message) == ("finished", 0, None), launch.log_tail(job.log_path)
    assert job.pid and job.pgid and job.host and job.seconds > 0
    assert job.progress["desc"] == "train topk" and job.progress["n"] == job.progress["total"] == 1024
    assert "dictionary done (topk" in launch.log_tail(job.log_path)
    assert "done" in _dictionaries(jobs_ws)
    assert not launch.lost(job) and not launch.alive(job.pid, job.id)


@slow
def test_cancel_stops_training_cleanly_and_keeps_a_resumable_checkpoint(jobs_ws):
    from sae.checkpoint import load_checkpoint

    job = _training(jobs_ws, _start(jobs_ws, [*TRAIN, "--tokens", "100000000", "--name", "long",
                                               "--checkpoint-every", "0"]).id)
    assert job.active and launch.cancel(job)
    job = _ended(jobs_ws, job.id)
    assert (job.status, job.exit_code) == ("cancelled", 130), launch.log_tail(job.log_path)
    assert "its checkpoint is kept" not in job.message  # --checkpoint-every 0: it says so
    assert "no checkpoint kept" in job.message
    # with checkpoints: the run stops between steps and keeps one at the step it names
    job = _training(jobs_ws, _start(jobs_ws, [*TRAIN, "--tokens", "100000000", "--name", "long2"]).id)
    assert launch.cancel(job)
    job = _ended(jobs_ws, job.id)
    assert job.status == "cancelled" and job.message.startswith("interrupted: training stopped at step ")
    step = int(job.message.split("step ")[1].split()[0])
    payload = load_checkpoint(jobs_ws.root / "checkpoints" / "long2" / "checkpoint.safetensors")
    assert payload["state"]["step"] == step > 0
    assert "long2" not in _dictionaries(jobs_ws) and not (jobs_ws.root / "dictionaries" / "long2").exists()
    with session(jobs_ws.db_path) as con:
        runs = con.execute("SELECT status, reason FROM training_runs WHERE dictionary = 'long2'").fetchall()
    assert runs == [("failed", job.message)]
    assert not launch.alive(job.pgid)


@slow
def test_a_killed_command_is_reported_failed(jobs_ws):
    job = _training(jobs_ws, _start(jobs_ws, [*TRAIN, "--tokens", "100000000", "--name", "killed"]).id)
    os.killpg(job.pgid, signal.SIGKILL)
    job = _ended(jobs_ws, job.id)
    assert (job.status, job.exit_code, job.message) == ("failed", -9, "killed by signal SIGKILL")


@slow
def test_a_job_whose_wrapper_died_is_failed_on_the_next_look(jobs_ws):
    job = _training(jobs_ws, _start(jobs_ws, [*TRAIN, "--tokens", "100000000", "--name", "orphan"]).id)
    assert not launch.lost(job)
    os.kill(job.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while (launch.alive(job.pid, job.id) or launch.alive(job.pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not launch.alive(job.pgid), "the command outlived its wrapper"
    job = _get(jobs_ws, job.id)
    assert job.status == "running" and launch.lost(job)  # nobody reported: the next look finds it lost
    with session(jobs_ws.db_path) as con:
        assert repo.mark_lost(con, job.id)
    assert (_get(jobs_ws, job.id).status, _get(jobs_ws, job.id).message) == ("failed", repo.LOST)


@slow
def test_a_refused_command_ends_with_the_clis_error_line(jobs_ws):
    job = _ended(jobs_ws, _start(jobs_ws, ["analyze", "no-such-dictionary"]).id)
    assert (job.status, job.exit_code) == ("failed", 2)
    assert "no-such-dictionary" in job.message and not job.message.startswith("error:")
