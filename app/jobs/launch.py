"""Start, cancel and look at jobs: the store row first, then the wrapper process (app/jobs/run.py).

Starting is two steps so that a busy store never leaves a process behind: `create` adds the queued row (on the
caller's short write connection), `spawn` starts the wrapper once that connection is closed. The wrapper marks
the row running; a queued row no wrapper claimed within START_TIMEOUT_S, or an active row whose wrapper is gone,
is lost (`lost`): the caller marks it failed (store.jobs.mark_lost).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from app.jobs.progress import Progress, from_dict, read_last
from app.jobs.run import LOG, PROGRESS, ROOT, child_env, job_folder, read_tail
from store import jobs as repo
from store.workspace import Workspace

START_TIMEOUT_S = 120.0
"""A queued job whose wrapper has not marked it running by then never started."""
TAIL_BYTES = 65536


def create(con, ws: Workspace, argv: list[str]) -> repo.Job:
    """The queued row of a job running `sparsescope ARGV`, and its folder WORKSPACE/jobs/ID."""
    job_id = repo.new_id()
    folder = job_folder(ws.root, job_id)
    folder.mkdir(parents=True, exist_ok=True)
    return repo.add_job(con, job_id, list(argv), str(folder / LOG))


def spawn(ws: Workspace, job: repo.Job) -> int:
    """Start the job's wrapper in a session of its own (it outlives the UI); its pid. OSError if it cannot start."""
    cmd = [sys.executable, "-m", "app.jobs.run", "--workspace", str(ws.root), "--job", job.id, "--", *job.argv]
    with open(job.log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env=child_env(Path(job.log_path).with_name(PROGRESS)), start_new_session=True)
    # reap it when it ends (else it would stay a zombie of this process, and look alive)
    threading.Thread(target=proc.wait, name=f"job-{job.id}", daemon=True).start()
    return proc.pid


def alive(pid: int, job_id: str | None = None) -> bool:
    """Whether process pid runs (and, where /proc tells, is the wrapper of job_id and not a zombie)."""
    proc = Path("/proc") / str(pid)
    if Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().decode("utf-8", "replace")
        except OSError:
            return False
        if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
            return False
        return job_id is None or job_id in cmdline
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lost(job: repo.Job, host: str | None = None) -> bool:
    """An active job of this host whose wrapper is gone (or never came)."""
    if not job.active or (job.host or socket.gethostname()) != (host or socket.gethostname()):
        return False
    if job.pid is None:
        return (repo.now() - job.created).total_seconds() > START_TIMEOUT_S
    return not alive(job.pid, job.id)


def cancel(job: repo.Job) -> bool:
    """Ask the job's wrapper to cancel (SIGTERM: it passes SIGINT to the command, then SIGKILL after its grace
    period). False when there is no wrapper to ask: the caller records the outcome itself."""
    if not job.active or job.pid is None or job.host != socket.gethostname() or not alive(job.pid, job.id):
        return False
    try:
        os.kill(job.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def log_tail(path: str, lines: int = 30) -> str:
    """The last lines of a log as a terminal would show them (a progress bar's redraws collapse to the last)."""
    text = read_tail(path, TAIL_BYTES)
    if text is None:
        return ""
    shown = [line.rstrip("\r").split("\r")[-1].rstrip() for line in text.split("\n")]
    return "\n".join([line for line in shown if line][-lines:])


def progress(job: repo.Job) -> Progress | None:
    """Live progress of an active job (its progress file), the recorded one of a finished job."""
    if not job.active:
        return from_dict(job.progress) if job.progress else None
    return read_last(Path(job.log_path).with_name(PROGRESS))
