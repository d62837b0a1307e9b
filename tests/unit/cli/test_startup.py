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
    assert "export-db" in out.stdout and "search-text" in out.stdout
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


def test_a_name_in_training_is_refused_before_torch_is_imported(tmp_path):
    """A second `train --name X` while another process trains X: refused at once (no torch import, no store)."""
    from store import Workspace
    from store.locks import reserve_dictionary

    space = Workspace.resolve(str(tmp_path / "ws"))
    hold = reserve_dictionary(space, "dup")  # this test process plays the run that holds the name
    try:
        out = probe("train", "--arch", "topk", "--activations", "cache", "--name", "dup", "-w", str(space.root))
    finally:
        hold.release(remove=True)
    lines = out.stderr.strip().splitlines()
    assert lines[0] == (f"error: dictionary 'dup' is in use by another process (pid {os.getpid()}); wait for it "
                        "to finish or choose another name")
    assert lines[-1] == "exit=2 torch=False"
    assert not (space.root / "sparsescope.duckdb").exists()


def test_a_free_name_is_let_go_when_train_refuses_its_options(tmp_path):
    out = probe("train", "--arch", "topk", "--activations", "cache", "--lr", "0", "--name", "free",
                "-w", str(tmp_path))
    assert out.stderr.strip().splitlines()[-1].startswith("exit=2")
    assert not (tmp_path / "checkpoints" / "free").exists()  # neither the lock file nor its folder is left
