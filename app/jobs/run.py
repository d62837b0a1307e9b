"""The wrapper of one job: `python -m app.jobs.run --workspace WS --job ID -- COMMAND ARGS...`.

It starts `python -m app.cli -w WS COMMAND ARGS...` in its own process group, with one torch thread (the job
shares the machine's cores with the UI) and the progress channel (app/jobs/progress.py) set, its output in the
job's log; marks the job running; and when the command ends, records its exit status in the store, so the
outcome is known even when no UI is left to see it. SIGTERM, SIGINT or SIGHUP to the wrapper is a cancel: the
command gets SIGINT (it stops cleanly and says what it kept), and SIGKILL if it is still running GRACE_S later.
The wrapper holds the store only for its two short writes.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from app.jobs.progress import ENV as PROGRESS_ENV
from app.jobs.progress import read_last

LOG = "log.txt"
PROGRESS = "progress.jsonl"

GRACE_S = 20.0
"""How long a cancelled command has to stop after SIGINT before it is killed."""
POLL_S = 0.2
ROOT = Path(__file__).resolve().parents[2]
"""The folder holding the `app` package: the command runs this same SparseScope."""
_PR_SET_PDEATHSIG = 1


def job_folder(ws_root: Path, job_id: str) -> Path:
    """WORKSPACE/jobs/ID: the job's log and progress file."""
    from store.paths import confined

    return confined(ws_root / "jobs", job_id, "job", root=ws_root)


class _Cancel:
    requested_at: float | None = None

    def __call__(self, signum, frame) -> None:
        if self.requested_at is None:
            self.requested_at = time.monotonic()


def child_env(progress: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SPARSESCOPE_QUIET", None)  # the page shows the progress bars' records: a job always draws them
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                "TQDM_MININTERVAL": "0.5", PROGRESS_ENV: str(progress)})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _die_with_parent() -> None:
    """In the command's process, before exec: a killed wrapper takes its command with it (Linux), so a job
    reported lost is not still running."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def start_command(ws_root: str, job_id: str, argv: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "app.cli", "-w", ws_root, *argv]
    progress = job_folder(Path(ws_root), job_id) / PROGRESS
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sys.stdout, stderr=sys.stderr, cwd=ROOT,
                            env=child_env(progress), start_new_session=True,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)


def wait(child: subprocess.Popen, cancel: _Cancel, grace_s: float = GRACE_S) -> int:
    """Wait for the command, passing a cancel on to its process group: SIGINT, then SIGKILL after grace_s."""
    interrupted = killed = False
    while child.poll() is None:
        if cancel.requested_at is not None:
            waited = time.monotonic() - cancel.requested_at
            if not interrupted:
                _signal_group(child.pid, signal.SIGINT)
                interrupted = True
            elif waited > grace_s and not killed:
                print(f"the command did not stop {grace_s:.0f} s after SIGINT: killed", file=sys.stderr, flush=True)
                _signal_group(child.pid, signal.SIGKILL)
                killed = True
        time.sleep(POLL_S)
    return child.returncode


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def read_tail(path: str | Path, limit: int) -> str | None:
    """The last `limit` bytes of a log as text (None when it cannot be read)."""
    try:
        with open(path, "rb") as src:
            src.seek(0, os.SEEK_END)
            src.seek(max(0, src.tell() - limit))
            return src.read().decode("utf-8", "replace")
    except OSError:
        return None


def last_error(log: Path, limit: int = 65536) -> str | None:
    """The command's last `error: ...` line (what the CLI prints when it refuses or fails), if any."""
    text = read_tail(log, limit)
    if text is None:
        return None
    lines = [part.split("\r")[-1].strip() for part in text.splitlines()]
    errors = [line for line in lines if line.startswith("error: ")]
    return errors[-1][len("error: "):][:500] if errors else None


def outcome(code: int, cancelled: bool, log: Path) -> tuple[str, str | None]:
    """(status, message) of a command that exited with `code`."""
    said = last_error(log)
    if cancelled:
        return "cancelled", said or ("stopped" if code == 0 else "cancelled")
    if code == 0:
        return "finished", None
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return "failed", f"killed by signal {name}" + (f" ({said})" if said else "")
    return "failed", said or f"exit code {code}"


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.jobs.run")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    opts = parser.parse_args(args)
    argv = opts.argv[1:] if opts.argv[:1] == ["--"] else opts.argv

    from store import jobs as repo
    from store import session
    from store.workspace import Workspace

    cancel = _Cancel()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, cancel)
    ws = Workspace.resolve(opts.workspace, create=False)
    child = start_command(str(ws.root), opts.job, argv)  # its output: this process's own, which is the job's log
    with session(ws.db_path) as con:
        started = repo.mark_running(con, opts.job, os.getpid(), child.pid, socket.gethostname())
        log = Path(repo.get_job(con, opts.job).log_path)
    if not started:  # cancelled or given up on before this process got the store: the command barely began
        _signal_group(child.pid, signal.SIGKILL)
        child.wait()
        return 0
    code = wait(child, cancel)
    status, message = outcome(code, cancel.requested_at is not None, log)
    last = read_last(log.with_name(PROGRESS))
    with session(ws.db_path) as con:
        repo.finish_job(con, opts.job, status, code, message, last.as_dict() if last else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
