"""`sparsescope ui`: the streamlit command it runs, the workspace it passes, the warning for open hosts."""
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from app.commands import ui as cmd_ui
from tests.helpers import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[3]


def serve(monkeypatch, capsys, *args):
    calls = []
    monkeypatch.setattr(cmd_ui, "run_server", lambda cmd, env: calls.append((cmd, env)) or 0)
    monkeypatch.setattr(sys, "argv", ["sparsescope", "ui", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err, calls


def test_serves_headless_on_localhost_without_telemetry(monkeypatch, capsys, tmp_path):
    code, out, err, calls = serve(monkeypatch, capsys, "-w", str(tmp_path / "ws"))
    assert code in (0, None) and not err
    assert "http://127.0.0.1:8501" in out
    (cmd, env), = calls
    assert cmd[1] == str(ROOT / "app" / "ui" / "serve.py")  # `streamlit run app/ui/main.py` after warming up
    flags = dict(zip(cmd[2::2], cmd[3::2]))
    assert flags["--server.address"] == "127.0.0.1" and flags["--server.port"] == "8501"
    assert flags["--server.headless"] == "true" and flags["--browser.gatherUsageStats"] == "false"
    assert env["SPARSESCOPE_WORKSPACE"] == str((tmp_path / "ws").resolve())


def test_another_host_warns_that_there_is_no_authentication(monkeypatch, capsys, tmp_path):
    code, out, err, calls = serve(monkeypatch, capsys, "--host", "0.0.0.0", "--port", "9000", "-w", str(tmp_path))
    assert code in (0, None) and "http://0.0.0.0:9000" in out
    assert err.startswith("warning:") and "no authentication" in err
    assert dict(zip(calls[0][0][2::2], calls[0][0][3::2]))["--server.address"] == "0.0.0.0"


def test_an_old_store_is_migrated_before_serving(monkeypatch, capsys, tmp_path):
    import duckdb

    (tmp_path / "ws").mkdir()
    duckdb.connect(str(tmp_path / "ws" / "sparsescope.duckdb")).close()  # empty file, no schema
    serve(monkeypatch, capsys, "-w", str(tmp_path / "ws"))
    con = duckdb.connect(str(tmp_path / "ws" / "sparsescope.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'features'").fetchone()[0]
    con.close()


def test_a_bad_port_is_refused(monkeypatch, capsys, tmp_path):
    code, _, err, calls = serve(monkeypatch, capsys, "--port", "0", "-w", str(tmp_path))
    assert code == 2 and not calls


def test_the_server_process_warms_up_then_runs_the_router(monkeypatch):
    from streamlit.web import cli

    from app.ui import serve

    seen = []
    monkeypatch.setattr(cli, "main", lambda: seen.append(list(sys.argv)))
    monkeypatch.setattr(sys, "argv", sys.argv[:])
    serve.main(["--server.port", "1234"])
    assert seen == [["streamlit", "run", str(serve.MAIN), "--server.port", "1234"]]
    serve.warm_libraries()  # what the background thread runs, before and after the runtime exists
    serve.warm_app()
    assert "plotly.express" in sys.modules and "app.ui.data.cache" in sys.modules


def test_the_warm_up_thread_starts_after_pandas_and_streamlit_are_imported():
    """Plotly (imported by Streamlit) asks sys.modules for pandas: a pandas import half-done in the warm-up thread
    while the main thread imports Streamlit crashed the server at start-up."""
    probe = (
        "import sys, threading\n"
        "seen = []\n"
        "threading.Thread.start = lambda self: seen.append(('pandas' in sys.modules, 'streamlit' in sys.modules))\n"
        "import app.ui.serve as serve\n"
        "import streamlit.web.cli as cli\n"
        "cli.main = lambda: None\n"
        "serve.main([])\n"
        "print(seen)\n"
    )
    # a fresh interpreter: in this one pandas and Streamlit are long imported
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[(True, True)]"


def test_serves_from_a_folder_that_has_its_own_app_and_store_modules(tmp_path):
    """A researcher's folder often has an app.py or a store/ package: they must not shadow ours."""
    import os

    for name in ("app", "store", "analysis"):
        (tmp_path / f"{name}.py").write_text(f"open({name!r} + '.ran', 'w').close()\n")
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "sparsescope"), "ui", "--port", str(port),
                             "-w", str(tmp_path / "ws")], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        try:
            wait_healthy(f"http://127.0.0.1:{port}", proc, timeout_s=90)
            healthy = True
        except (RuntimeError, TimeoutError):
            healthy = False
    finally:
        os.killpg(proc.pid, 15)
        output = proc.communicate(timeout=30)[0]
    assert healthy, output
    assert not list(tmp_path.glob("*.ran")), "a module of the current folder was imported"


def test_the_workspace_may_come_before_ui(monkeypatch, capsys, tmp_path):
    calls = []
    monkeypatch.setattr(cmd_ui, "run_server", lambda cmd, env: calls.append((cmd, env)) or 0)
    monkeypatch.setattr(sys, "argv", ["sparsescope", "-w", str(tmp_path / "ws"), "ui", "--port", "9001"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None)
    assert calls[0][1]["SPARSESCOPE_WORKSPACE"] == str((tmp_path / "ws").resolve())
    assert calls[0][1]["SPARSESCOPE_READ_ONLY"] == "0"
