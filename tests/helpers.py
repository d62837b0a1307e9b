"""Test utilities shared across test files: the CLI runner (in this process, or as a real process that a crash
point may kill), the one-error-line check, a store's rows for comparisons, the UI server (port, health check, a
served workspace) and the browser tests' page helpers, the id of a process that is gone. Builders of models,
configs and stores are in tests/factories.py."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]


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


def cli_env(crash_at: str | None = None, threads: int | None = None) -> dict[str, str]:
    """The environment of a CLI process: quiet, `threads` torch threads (default: this process' count, since equal
    thread counts give bit-equal floating point sums), SPARSESCOPE_CRASH_AT only when given."""
    import torch

    env = {k: v for k, v in os.environ.items() if k != "SPARSESCOPE_CRASH_AT"}
    env |= {"SPARSESCOPE_QUIET": "1", "OMP_NUM_THREADS": str(threads or torch.get_num_threads())}
    return env | ({"SPARSESCOPE_CRASH_AT": crash_at} if crash_at else {})


def start_cli(*args: str, crash_at: str | None = None, threads: int | None = None) -> subprocess.Popen:
    """`python -m app.cli ARGS...` as a real process of its own, from the repository root (stdout, stderr piped)."""
    return subprocess.Popen([sys.executable, "-m", "app.cli", *map(str, args)], cwd=ROOT,
                            env=cli_env(crash_at, threads), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cli_process(*args: str, crash_at: str | None = None, threads: int | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `sparsescope ARGS...` as a real process to its end; returncode -9 when a crash point killed it."""
    proc = start_cli(*args, crash_at=crash_at, threads=threads)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def store_rows(db_path, table: str, where: str = "", params: tuple = (), root: Path | None = None) -> list[tuple]:
    """Every row of `table` (WHERE `where`), sorted, without its timestamp columns and with the workspace `root`
    in stored paths replaced by "WS": what two runs of one job must agree on. Opens the store read-only."""
    from store import connect

    con = connect(db_path, read_only=True)
    try:
        columns = [name for name, kind in con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index",
            [table]).fetchall() if not kind.startswith("TIMESTAMP")]
        quoted = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
        query = f"SELECT {quoted} FROM {table}"
        rows = con.execute(query + (f" WHERE {where}" if where else "") + " ORDER BY ALL", list(params)).fetchall()
    finally:
        con.close()
    if root is None:
        return rows
    return [tuple(v.replace(str(root), "WS") if isinstance(v, str) else v for v in row) for row in rows]


def copy_workspace(src: Path, dst: Path) -> Path:
    """A copy of the workspace folder `src` at `dst`, the paths its store records pointing into the copy."""
    from store import connect

    shutil.copytree(src, dst)
    con = connect(dst / "sparsescope.duckdb")
    try:
        for table in ("activation_caches", "dictionaries"):
            con.execute(f"UPDATE {table} SET path = replace(path, ?, ?)", [str(src), str(dst)])
    finally:
        con.close()
    return dst


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


@contextlib.contextmanager
def serve_ui(ws: Path, timeout_s: float = 60) -> Iterator[str]:
    """`sparsescope ui` on workspace `ws` as a process of its own; yields its URL once it answers (within
    timeout_s), stops it after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "ui", "--port", str(port), "-w", str(ws)], cwd=ROOT,
                            # PYTHONPATH: this checkout's code in the server too, not the installed checkout's
                            env=os.environ | {"SPARSESCOPE_QUIET": "1", "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_healthy(url, proc, timeout_s)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def cli_workspace(tmp_path_factory, name: str, commands) -> Path:
    """The demo-sized store of tests/ui_store.py grown by `commands`, each a real `sparsescope` process (one torch
    thread), in a fresh folder."""
    ws = tmp_path_factory.mktemp(name) / "ws"
    subprocess.run([sys.executable, "-m", "tests.ui_store", str(ws)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    for args in commands:
        done = cli_process(*args, "-w", str(ws), threads=1)
        assert done.returncode == 0, (args, done.stderr)
    return ws


ARTIFACTS = ROOT / "tests" / "artifacts"
"""Where the browser tests save their screenshots (git-ignored)."""


def screenshot(page, name: str) -> None:
    """The whole page as tests/artifacts/NAME.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def settled(page, timeout_ms: float = 60_000) -> None:
    """Wait until Streamlit has finished running the page's script."""
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)


WORD_JOINER = "\u2060"
# what GitHub-flavoured Markdown turns into links without brackets (mdast-util-gfm-autolink-literal), and the
# :shortcodes: Streamlit turns into emoji or icons; both are found in the text after parsing
_BARE_LINK = re.compile(r"(?i)(?:https?://|www(?=\.))[-.\w]+|[-.\w+]+@[-\w]+(?:\.[-\w]+)+")
_SHORTCODE = re.compile(r":[\w+\-/]+:")
_MATH = re.compile(r"(?<!\\)\$")
_DIRECTIVE = re.compile(r"(?<![\\:]):[A-Za-z]")
HOSTILE = ("![x](http://evil.example/p.png)", "[click](https://evil.example/login)", "<img src=x onerror=alert(1)>",
           "**bold** _it_ `code` ~~s~~ $x^2$ :red[red] :material/home: :smile:",
           "see www.evil.example or me@evil.example",
           "# heading\n- item\n1. item\n> quote\n===", "a | b\n--- | ---\n[^1] &amp; \\[x]")
"""Strings that Markdown would turn into an image, links, HTML, formatting, icons, blocks: a UI must show them as
text."""


def rendered_markdown(source: str) -> tuple[str, set[str]]:
    """What a CommonMark renderer with GFM tables and strikethrough (Streamlit's st.markdown) makes of `source`:
    (the text a reader sees, word joiners removed; every kind of element besides plain text, e.g. "image",
    "link_open", "html_inline", "em_open", "heading_open", plus "bare_link", "shortcode", "math" and
    "directive" for what Streamlit's renderer would turn into a link, an icon, LaTeX or a coloured span)."""
    from markdown_it import MarkdownIt

    plain = {"paragraph_open", "paragraph_close", "inline", "text", "softbreak"}
    kinds, texts = set(), []
    for token in MarkdownIt("commonmark").enable(["table", "strikethrough"]).parse(source):
        for part in [token, *(token.children or [])]:
            if part.type not in plain:
                kinds.add(part.type)
            if part.type == "text":
                texts.append(part.content)
            elif part.type == "softbreak":
                texts.append("\n")
    text = "".join(texts)
    if _BARE_LINK.search(text):
        kinds.add("bare_link")
    if _SHORTCODE.search(text):
        kinds.add("shortcode")
    if _MATH.search(source):
        kinds.add("math")
    if _DIRECTIVE.search(source):  # remark-directive: `:red` alone is a (coloured, empty) text directive
        kinds.add("directive")
    return text.replace(WORD_JOINER, ""), kinds


def assert_literal(source: str, *expected: str) -> None:
    """Markdown `source` renders as plain text (no element of any kind) that contains every `expected` string."""
    text, kinds = rendered_markdown(source)
    assert not kinds, (kinds, source)
    for part in expected:
        assert part in text, (part, text)
