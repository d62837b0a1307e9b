"""`sparsescope analyze` and `heads` killed with SIGKILL mid-pass, right before and right after their commit: the
store opens with the previous results or the new ones, and a rerun stores what an uninterrupted run stores."""
import pytest

from store.features import RESULT_COLUMNS
from tests.helpers import cli_process, copy_workspace, run_cli, store_rows

pytestmark = pytest.mark.slow
ANALYZE = ("analyze", "tk", "--corpus", "t", "--tokens", "4096", "--examples", "5", "--quantiles", "4",
           "--batch", "16")
HEADS = ("heads", "--model", "tiny-random", "--corpus", "t", "--tokens", "2048", "--batch", "16")
HEAD_TABLES = ("head_runs", "head_stats", "head_examples", "head_means")


def _analysis(root):
    return {t: store_rows(root / "sparsescope.duckdb", t, "dictionary = 'tk'")
            for t in (*RESULT_COLUMNS, "analyses")}


def _scan(root):
    return {t: store_rows(root / "sparsescope.duckdb", t, "model = 'tiny-random'") for t in HEAD_TABLES}


@pytest.fixture(scope="module")
def reference(fault_base, tmp_path_factory, tiny_model):
    """Both passes, uninterrupted."""
    from analysis.features.analyze import AnalyzeRequest, analyze_dictionary
    from analysis.heads.run import ensure_head_scan
    from analysis.heads.scan import HeadScanConfig
    from store import Workspace

    root = copy_workspace(fault_base, tmp_path_factory.mktemp("reference") / "ws")
    ws = Workspace(root)
    analyze_dictionary(ws, AnalyzeRequest("tk", corpus="t", tokens=4096, examples=5, quantiles=4, batch=16),
                       lm=tiny_model, progress=False)
    ensure_head_scan(ws.db_path, tiny_model, "t", 2048, config=HeadScanConfig(tokens=2048, batch=16),
                     progress=False)
    return root


@pytest.mark.parametrize("args, point, state", [
    pytest.param(args, point, state, id=point) for args, state in ((ANALYZE, _analysis), (HEADS, _scan))
    for point in (f"{args[0]}.batch:3", f"{args[0]}.commit", f"{args[0]}.committed")])
def test_a_killed_pass_reruns_to_the_same_rows(fault_base, reference, tmp_path, monkeypatch, capsys, args, point,
                                               state):
    assert next(iter(state(reference).values()))  # features / head_runs: the reference has results
    root = copy_workspace(fault_base, tmp_path / "ws")
    before = state(root)
    killed = cli_process(*args, "-w", root, crash_at=point)
    assert killed.returncode == -9, killed.stderr
    assert state(root) == (state(reference) if point.endswith(".committed") else before)  # all or nothing
    code, _, err = run_cli(monkeypatch, capsys, *args, "-w", str(root))
    assert code in (0, None), err
    assert state(root) == state(reference)
