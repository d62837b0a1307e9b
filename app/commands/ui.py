"""`sparsescope ui`: serve the Streamlit web UI on the workspace."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from app.commands.common import WorkspaceOpt, app, console, err_console, workspace

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
SERVE = Path(__file__).resolve().parents[1] / "ui" / "serve.py"


def streamlit_command(port: int, host: str) -> list[str]:
    """The command that serves the UI (`streamlit run` after warming up imports, see app/ui/serve.py):
    headless, no usage statistics, no file watcher, no deploy button.

    serve.py runs by its path, not `-m app.ui.serve`: -m puts the current folder first on sys.path, so a
    researcher's own app.py (or store/, analysis/) there would be imported instead of ours."""
    return [sys.executable, str(SERVE), "--server.port", str(port), "--server.address", host,
            "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--global.developmentMode", "false", "--client.toolbarMode", "minimal"]


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
    space = workspace(ws)
    _migrate(space.db_path)
    if host not in LOCAL_HOSTS:
        err_console.print(f"warning: serving on {host}: the UI has no authentication, so anyone who can reach "
                          f"this address can read the workspace and edit labels", markup=False)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"SparseScope UI on {space.root}: http://{shown}:{port}  (Ctrl+C stops it)", markup=False,
                  highlight=False)
    env = os.environ | {"SPARSESCOPE_WORKSPACE": str(space.root.resolve())}
    try:
        code = subprocess.call(streamlit_command(port, host), env=env)
    except KeyboardInterrupt:
        code = 0
    if code:
        raise typer.Exit(1)
