"""store/jobs.py: a job's row moves queued -> running -> an outcome, once; a lost job is failed only without one."""
import pytest

from store import jobs as repo
from store.errors import InputError


def _queued(con, job_id="j1", argv=("train", "--arch", "topk")):
    return repo.add_job(con, job_id, list(argv), f"/ws/jobs/{job_id}/log.txt")


def test_a_job_goes_from_queued_to_running_to_its_outcome(con):
    job = _queued(con)
    assert (job.status, job.command, job.argv, job.pid, job.started) == ("queued", "train",
                                                                         ["train", "--arch", "topk"], None, None)
    assert repo.mark_running(con, "j1", pid=11, pgid=12, host="h")
    running = repo.get_job(con, "j1")
    assert (running.status, running.pid, running.pgid, running.host) == ("running", 11, 12, "h")
    assert running.active and running.started is not None
    progress = {"desc": "train topk", "n": 10, "total": 10}
    assert repo.finish_job(con, "j1", "finished", 0, None, progress)
    done = repo.get_job(con, "j1")
    assert (done.status, done.exit_code, done.progress, done.active) == ("finished", 0, progress, False)
    assert done.seconds is not None and done.seconds >= 0


def test_an_outcome_is_recorded_once(con):
    _queued(con)
    assert repo.mark_running(con, "j1", 1, 2, "h")
    assert repo.finish_job(con, "j1", "cancelled", 130, "interrupted")
    assert not repo.mark_lost(con, "j1")  # the wrapper reported before the look: its outcome stays
    assert not repo.finish_job(con, "j1", "failed", 1, "late")
    assert not repo.mark_running(con, "j1", 1, 2, "h")
    job = repo.get_job(con, "j1")
    assert (job.status, job.exit_code, job.message) == ("cancelled", 130, "interrupted")


def test_a_lost_job_is_failed_and_says_why(con):
    _queued(con)
    repo.mark_running(con, "j1", 1, 2, "h")
    assert repo.mark_lost(con, "j1")
    job = repo.get_job(con, "j1")
    assert (job.status, job.message, job.exit_code) == ("failed", repo.LOST, None)


def test_a_job_cancelled_while_queued_is_not_started(con):
    _queued(con)
    assert repo.finish_job(con, "j1", "cancelled", None, "cancelled before it started")
    assert not repo.mark_running(con, "j1", 1, 2, "h")


def test_listing_is_newest_first_and_refuses_nonsense(con):
    for job_id in ("a", "b", "c"):
        _queued(con, job_id)
    assert [j.id for j in repo.list_jobs(con)] == ["c", "b", "a"]
    assert [j.id for j in repo.list_jobs(con, limit=2)] == ["c", "b"]
    with pytest.raises(InputError):
        repo.finish_job(con, "a", "running", None, None)
    with pytest.raises(InputError):
        repo.add_job(con, "d", [], "/x")
    with pytest.raises(InputError):
        repo.get_job(con, "nope")


def test_ids_sort_by_time_and_differ():
    ids = {repo.new_id() for _ in range(50)}
    assert len(ids) == 50 and all(len(i.split("-")) == 3 for i in ids)
