"""`sparsescope ui`: serve the Streamlit web UI on the workspace."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from app.commands.common import WorkspaceOpt, app, console, err_console, workspace

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
SERVE = Path(__file__).resolve().parents[1] / "ui" / "serve.py"
STOP_WAIT_S = 10.0
"""How long the launcher waits for the server to stop before killing it."""


def url_host(host: str) -> str:
    """`host` as it goes in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


def allowed_hosts(host: str) -> list[str]:
    """Host names the server accepts on its WebSocket (server.allowedHosts), which refuses DNS rebinding: a page
    on a name that an attacker points at this address sends that name as Host. Bound to loopback: the loopback
    names; to one address: that address; to every address (0.0.0.0, ::): any name, since which names the network
    uses for this machine is unknown (Streamlit's default, and `ui` warns that the UI is open)."""
    if host in LOCAL_HOSTS:
        return list(LOCAL_HOSTS)
    if host in WILDCARD_HOSTS:
        return []
    return [host]


def streamlit_command(port: int, host: str) -> list[str]:
    """The command that serves the UI (`streamlit run` after warming up imports, see app/ui/serve.py):
    headless, no usage statistics, no file watcher, no deploy button; XSRF and CORS protection on (enableCORS
    true is the protection: only same-origin pages may open the WebSocket), and the Host allow-list above.

    serve.py runs by its path, not `-m app.ui.serve`: -m puts the current folder first on sys.path, so a
    researcher's own app.py (or store/, analysis/) there would be imported instead of ours."""
    cmd = [sys.executable, str(SERVE), "--server.port", str(port), "--server.address", host,
           "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
           "--global.developmentMode", "false", "--client.toolbarMode", "minimal",
           "--server.enableXsrfProtection", "true", "--server.enableCORS", "true"]
    if host not in WILDCARD_HOSTS:
        cmd += ["--browser.serverAddress", url_host(host)]
    for name in allowed_hosts(host):
        cmd += ["--server.allowedHosts", name]
    return cmd


def run_server(cmd: list[str], env: dict[str, str]) -> int:
    """Run the server and wait for it. SIGTERM (a process manager, `kill`), SIGHUP and SIGINT sent to this
    launcher are passed on to the server, which stops gracefully and frees its port; without this the launcher
    died alone and the server kept serving. A server that does not stop within STOP_WAIT_S is killed."""
    proc = subprocess.Popen(cmd, env=env)

    def forward(signum, frame) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    main_thread = threading.current_thread() is threading.main_thread()  # handlers can only be set there
    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, forward) for sig in stops} if main_thread else {}
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:  # the wait itself failed: never leave the server behind
            proc.terminate()
            try:
                proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _migrate(db: Path) -> None:
    """Bring an existing store to the newest schema before serving it (read-only connections cannot)."""
    import duckdb

    from store.db import connect, is_lock_error

    if not db.exists():
        return
    try:
        connect(db, wait_s=2.0).close()
    except (duckdb.IOException, duckdb.ConnectionException) as exc:
        if not is_lock_error(exc):
            raise
        err_console.print("note: a job is writing the store; the UI shows its results when it commits")


@app.command()
def ui(port: Annotated[int, typer.Option(help="Port to serve on.", min=1, max=65535)] = 8501,
       host: Annotated[str, typer.Option(help="Address to listen on; anything but localhost opens the UI "
                                              "to the network.")] = "127.0.0.1",
       ws: WorkspaceOpt = None):
    """Serve the web UI (feature browser, prompt inspector, compare) on the workspace."""
    space = workspace(ws, create=False)
    read_only = space.root.is_dir() and not space.writable()
    if read_only:
        err_console.print(f"note: {space.root} is read-only: the UI serves it, but labels and steering runs cannot "
                          "be saved", markup=False, soft_wrap=True)
    else:
        space = workspace(ws)
        _migrate(space.db_path)
    if host not in LOCAL_HOSTS:
        err_console.print(f"warning: serving on {host}: the UI has no authentication, so anyone who can reach "
                          f"this address can read the workspace and edit labels", markup=False)
    console.print(f"SparseScope UI on {space.root}: http://{url_host(host)}:{port}  (Ctrl+C stops it)",
                  markup=False, highlight=False)
    from store.workspace import ENV_VAR, READ_ONLY_ENV

    env = os.environ | {ENV_VAR: str(space.root.resolve()), READ_ONLY_ENV: "1" if read_only else "0"}
    if run_server(streamlit_command(port, host), env):
        raise typer.Exit(1)
