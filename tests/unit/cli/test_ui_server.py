"""`sparsescope ui` as a real process: the command line it builds, who may open its WebSocket, SIGTERM stops the
server too, and a read-only workspace is served."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.commands import ui as cmd_ui
from tests.helpers import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[3]
SPARSESCOPE = Path(sys.executable).parent / "sparsescope"


def _flags(cmd: list[str]) -> list[tuple[str, str]]:
    return list(zip(cmd[2::2], cmd[3::2]))


@pytest.mark.parametrize("host, browser, allowed", [
    ("127.0.0.1", "127.0.0.1", ["127.0.0.1", "localhost", "::1"]),
    ("::1", "[::1]", ["127.0.0.1", "localhost", "::1"]),
    ("10.1.2.3", "10.1.2.3", ["10.1.2.3"]),
    ("0.0.0.0", None, []),
])
def test_the_command_line_turns_the_protections_on(host, browser, allowed):
    pairs = _flags(cmd_ui.streamlit_command(8501, host))
    flags = dict(pairs)
    assert flags["--server.enableXsrfProtection"] == "true"
    assert flags["--server.enableCORS"] == "true"  # true is CORS *protection* on (same-origin WebSocket only)
    assert flags.get("--browser.serverAddress") == browser
    assert sorted(v for k, v in pairs if k == "--server.allowedHosts") == sorted(allowed)
    assert flags["--server.address"] == host and flags["--server.headless"] == "true"


def _upgrade(port: int, host: str, origin: str | None) -> str:
    """Status line of a WebSocket handshake on the UI's stream with these Host and Origin headers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall((f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                      + (f"Origin: {origin}\r\n" if origin else "") + "\r\n").encode())
        return sock.recv(4096).decode("latin-1").split("\r\n")[0]


def _port_free(port: int) -> bool:
    """Whether nothing listens on the port (connections of the stopped server in TIME_WAIT do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start(args: list[str], cwd: Path, prefix: list[str] = ()) -> subprocess.Popen:
    # PYTHONPATH: this checkout's code, whichever checkout the console script was installed from
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.Popen([*prefix, str(SPARSESCOPE), "ui", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _sigterm_frees_the_port(proc: subprocess.Popen, port: int) -> None:
    os.kill(proc.pid, signal.SIGTERM)  # the launcher alone, as a process manager or `kill PID` does
    deadline = time.monotonic() + 8
    while not _port_free(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _port_free(port), "the server kept its port after SIGTERM to the launcher"
    assert proc.wait(timeout=15) == 0


def _stop(proc: subprocess.Popen) -> str:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.communicate(timeout=30)[0]


def test_other_hosts_and_origins_are_refused_and_sigterm_stops_the_server(tmp_path):
    port = free_port()
    proc = _start(["--port", str(port), "-w", str(tmp_path / "ws")], tmp_path)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout_s=90)
        ok = "HTTP/1.1 101"
        assert _upgrade(port, f"127.0.0.1:{port}", f"http://127.0.0.1:{port}").startswith(ok)
        assert _upgrade(port, f"localhost:{port}", f"http://localhost:{port}").startswith(ok)
        # DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1
        assert _upgrade(port, f"evil.example:{port}", f"http://evil.example:{port}").startswith("HTTP/1.1 403")
        assert _upgrade(port, f"evil.example:{port}", None).startswith("HTTP/1.1 403")
        # another site's page talking to the real address (CORS protection)
        assert _upgrade(port, f"127.0.0.1:{port}", "http://evil.example").startswith("HTTP/1.1 403")
        _sigterm_frees_the_port(proc, port)
    finally:
        output = _stop(proc)
    assert "Traceback" not in output, output


def _read_only_prefix(folder: Path) -> list[str] | None:
    """A command prefix that runs its command with `folder` read-only: permissions for a normal user; for root,
    whom permissions do not stop, a read-only bind mount in a private mount namespace. None: neither works."""
    if os.geteuid() != 0:
        for path in (*folder.iterdir(), folder):
            path.chmod(path.stat().st_mode & 0o555)
        return []
    if shutil.which("unshare") is None:
        return None
    prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
              'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"', str(folder)]
    probe = subprocess.run([*prefix, "touch", str(folder / "probe")], capture_output=True, text=True)
    if probe.returncode == 0 or "Read-only file system" not in probe.stderr:
        return None
    return prefix


def test_a_read_only_workspace_is_served(tmp_path):
    """It crashed with `internal failure: IOException: ... Read-only file system` while migrating the store."""
    from tests.ui_store import demo_workspace

    root = demo_workspace(tmp_path / "ws")
    prefix = _read_only_prefix(root)
    if prefix is None:
        pytest.skip("cannot make a folder read-only here (root without mount namespaces)")
    port = free_port()
    proc = _start(["--port", str(port), "-w", str(root)], tmp_path, prefix)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout_s=90)
        _sigterm_frees_the_port(proc, port)
    finally:
        output = _stop(proc)
        if os.geteuid() != 0:
            root.chmod(0o755)
    assert "read-only: the UI serves it, but labels and steering runs cannot be saved" in output, output
    assert "Traceback" not in output and "error:" not in output, output
