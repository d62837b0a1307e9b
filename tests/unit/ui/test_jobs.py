"""Jobs page: a bad option is one st.error and no job; a job started from the form runs and its outcome (the CLI's
error line) is listed; past jobs survive a reload; a running job shows its progress and can be cancelled; a job
whose process is gone is failed on the next look."""
import socket
import subprocess
import time

import pytest

from store import jobs as repo
from store import session
from tests.ui_store import open_page

PAGE = "views/jobs.py"

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(root):
    with session(root / "sparsescope.duckdb") as con:
        return repo.list_jobs(con)


def _add(root, job_id, argv, status, pid=None, exit_code=None, message=None):
    log = root / "jobs" / job_id / "log.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"output of {job_id}\n")
    with session(root / "sparsescope.duckdb") as con:
        repo.add_job(con, job_id, argv, str(log))
        if status != "queued":
            repo.mark_running(con, job_id, pid or 1, pid or 1, socket.gethostname())
        if status not in repo.ACTIVE:
            repo.finish_job(con, job_id, status, exit_code, message)
    return log


def _start(at, command, arch=None, **values):
    at.selectbox[0].set_value(command).run()
    if arch is not None:
        at.selectbox(key=f"job-{command}-arch").set_value(arch)
    for name, value in values.items():
        at.text_input(key=f"job-{command}-{name}").set_value(value)
    return at.button[0].click().run()


def test_a_bad_option_is_one_error_and_starts_nothing(ui_ws):
    at = _start(open_page(PAGE), "train", arch="topk", k="-3")
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "--k must be" in errors[0], errors
    assert _rows(ui_ws) == [] and not (ui_ws / "jobs").exists()


def test_the_train_form_offers_every_trainable_architecture(ui_ws):
    from sae.dictionaries import trainable

    at = open_page(PAGE, command="train")
    arch = next(s for s in at.selectbox if s.label.startswith("--arch"))
    assert arch.options == [a.name for a in trainable()]
    assert {t.label for t in at.text_input} >= {"--k", "--l1", "--d-sae", "--tokens", "--lr", "--checkpoint-every"}


def test_a_job_started_from_the_form_ends_with_the_clis_error_line(ui_ws):
    at = _start(open_page(PAGE), "report", dictionary="no-such-dict")
    assert not at.exception and not at.error, [e.value for e in at.error]
    [job] = _rows(ui_ws)
    assert job.argv == ["report", "no-such-dict"]
    deadline = time.monotonic() + 60
    while job.active and time.monotonic() < deadline:
        time.sleep(0.2)
        [job] = _rows(ui_ws)
    assert (job.status, job.exit_code) == ("failed", 2)
    assert "unknown dictionary 'no-such-dict'" in job.message
    again = open_page(PAGE)  # a reload shows it among the past jobs
    table = again.dataframe[0].value
    assert list(table["job"]) == [job.id] and list(table["outcome"]) == ["failed"]
    assert "no-such-dict" in again.code[-1].value


def test_past_jobs_are_listed_and_a_reload_shows_the_same(ui_ws):
    _add(ui_ws, "j1", ["analyze", "topk-demo"], "finished", exit_code=0)
    _add(ui_ws, "j2", ["train", "--arch", "topk"], "cancelled", exit_code=130, message="interrupted: step 3")
    _add(ui_ws, "j3", ["heads"], "failed", exit_code=2, message="[x](http://e) bad")
    first, second = open_page(PAGE), open_page(PAGE)
    for at in (first, second):
        assert not at.exception and not at.error
        table = at.dataframe[0].value
        assert list(table["job"]) == ["j3", "j2", "j1"]
        assert list(table["outcome"]) == ["failed", "cancelled", "finished"]
        assert list(table["exit code"]) == [2, 130, 0]
        assert table["message"][0] == "[x](http://e) bad"  # a dataframe shows text as text
        assert list(table["command"])[1] == "sparsescope train --arch topk"
        assert at.code[-1].value == "output of j3"


def test_a_running_job_shows_progress_and_cancel_signals_its_process(ui_ws):
    log = _add(ui_ws, "live", ["train", "--arch", "topk"], "queued")
    # a stand-in for the wrapper: a process whose command line names the job, as the wrapper's does
    proc = subprocess.Popen(["sh", "-c", "sleep 60", "live"])
    try:
        with session(ui_ws / "sparsescope.duckdb") as con:
            repo.mark_running(con, "live", proc.pid, proc.pid, socket.gethostname())
        (log.parent / "progress.jsonl").write_text(
            '{"desc": "train topk", "n": 256, "total": 1024, "unit": "tok", "elapsed": 2.0, "rate": 128.0}\n')
        at = open_page(PAGE)
        assert not at.exception and not at.error
        [bar] = at.get("progress")
        assert bar.value == 25 and "ETA 0:06" in bar.proto.text
        assert any("output of live" in c.value for c in at.code)
        next(b for b in at.button if b.label == "Cancel").click().run()
        assert proc.wait(timeout=10) == -15  # SIGTERM: the wrapper's cancel signal
    finally:
        proc.kill()
    at = open_page(PAGE)  # the stand-in reported nothing: the next look finds it lost
    [job] = _rows(ui_ws)
    assert (job.status, job.message) == ("failed", repo.LOST)
    assert list(at.dataframe[0].value["outcome"]) == ["failed"]


def test_a_job_whose_process_is_gone_is_failed_on_the_next_look(ui_ws):
    gone = subprocess.Popen(["true"])
    gone.wait()
    _add(ui_ws, "ghost", ["heads"], "running", pid=gone.pid)
    assert _rows(ui_ws)[0].status == "running"
    at = open_page(PAGE)
    assert not at.exception
    [job] = _rows(ui_ws)
    assert (job.status, job.message) == ("failed", repo.LOST)
    assert list(at.dataframe[0].value["message"]) == [repo.LOST]
