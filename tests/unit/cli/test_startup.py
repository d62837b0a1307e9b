"""`sparsescope --help` and bad input that needs no model answer without importing torch (seconds saved)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

# runs main() with the given arguments, then reports its exit code and whether torch got imported
PROBE = """
import sys
import app.cli
sys.argv = ["sparsescope", *sys.argv[1:]]
try:
    app.cli.main()
except SystemExit as exc:
    code = exc.code
print(f"exit={code} torch={'torch' in sys.modules}", file=sys.stderr)
"""


def probe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={**os.environ, "SPARSESCOPE_QUIET": "1", "COLUMNS": "100"})


def test_help_does_not_import_torch():
    out = probe("--help")
    assert "Usage: sparsescope" in out.stdout
    assert "export-db" in out.stdout
    assert out.stderr.strip().splitlines()[-1] == "exit=0 torch=False"


def test_store_input_error_does_not_import_torch(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    out = probe("corpus", "list", "--workspace", str(not_a_folder))
    lines = out.stderr.strip().splitlines()
    assert lines[0] == f"error: workspace path {not_a_folder} is a file, not a folder"
    assert lines[-1] == "exit=2 torch=False"


@pytest.mark.parametrize("args", [("bogus",), ("train", "--no-such-option")])
def test_usage_errors_exit_2_without_torch(args):
    out = probe(*args)
    assert out.stderr.strip().splitlines()[-1] == "exit=2 torch=False"
