"""Test utilities shared across test files: the CLI runner, the one-error-line check, the UI server's port and
health check, the id of a process that is gone. Builders of models, configs and stores are in tests/factories.py."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`sparsescope ARGS...` in this process: (exit code, stdout, stderr). The CLI always ends in SystemExit."""
    from app.cli import main

    monkeypatch.setattr(sys, "argv", ["sparsescope", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def error_line(err: str) -> str:
    """The single `error: ...` line of stderr; fails on anything more, or on a traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped): what a killed run leaves in staging names."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def killed_staging(parent, base: str, tag: str = "k1ll3d", suffix: str = "") -> Path:
    """Where a killed run (its process gone) left its staging for the target `base` in `parent`."""
    from store.paths import HOST

    return Path(parent) / f".{base}.partial-{dead_pid()}@{HOST}-{tag}{suffix}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    """Return once the Streamlit server `proc` at url answers its health check; RuntimeError if it exits first,
    TimeoutError if it is not up within timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sparsescope ui exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("the UI did not come up")
