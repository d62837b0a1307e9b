"""`sparsescope explain` killed with SIGKILL right before and right after a batch's commit: the store opens, the
finished batches are kept, and a rerun ends with the rows of an uninterrupted run."""
import shutil

import pytest

from tests.factories import explained_workspace
from tests.helpers import cli_process, run_cli, store_rows

pytestmark = pytest.mark.slow
ARGS = ("explain", "planted", "--batch", "5")


@pytest.fixture(scope="module")
def explain_base(tmp_path_factory):
    return explained_workspace(tmp_path_factory.mktemp("explain_base") / "ws")


def _rows(root):
    db = root / "sparsescope.duckdb"
    return store_rows(db, "explanations"), store_rows(db, "explanation_scores")


@pytest.mark.parametrize(("point", "kept"), [("explain.commit:2", 5), ("explain.committed:2", 10)])
def test_a_killed_explain_resumes_to_the_uninterrupted_rows(explain_base, tmp_path, monkeypatch, capsys, point,
                                                            kept):
    reference = shutil.copytree(explain_base, tmp_path / "reference")
    code, _, err = run_cli(monkeypatch, capsys, *ARGS, "-w", str(reference))
    assert code in (0, None), err
    root = shutil.copytree(explain_base, tmp_path / "ws")
    killed = cli_process(*ARGS, "-w", root, crash_at=point)
    assert killed.returncode == -9, killed.stderr
    explanations, _ = _rows(root)
    assert len(explanations) == kept
    code, out, err = run_cli(monkeypatch, capsys, *ARGS, "-w", str(root))
    assert code in (0, None), err
    assert f"{kept} done before" in out
    assert _rows(root) == _rows(reference)
