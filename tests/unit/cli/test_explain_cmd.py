"""`sparsescope explain`: the summary of a run, a rerun that skips what is done, and every bad input as one error
line with exit 2 and nothing written."""
import pytest

from store import connect
from tests.helpers import error_line, run_cli


def _counts(ws):
    con = connect(ws / "sparsescope.duckdb", read_only=True)
    try:
        return tuple(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                     for t in ("explanations", "explanation_scores", "feature_labels"))
    finally:
        con.close()


def test_explain_prints_a_summary_and_a_rerun_skips(monkeypatch, capsys, explain_ws):
    code, out, err = run_cli(monkeypatch, capsys, "explain", "planted", "--features", "1-6,9", "-w", str(explain_ws))
    assert code in (0, None), err
    assert "planted: 7 of 7 features explained by patterns" in out
    for word in ("detection", "balanced_accuracy", "simulation", "correlation", "baseline mean"):
        assert word in out
    assert _counts(explain_ws)[:2] == (7, 7 * 6)
    code, out, err = run_cli(monkeypatch, capsys, "explain", "planted", "--features", "1-6,9", "--scorer",
                             "detection", "-w", str(explain_ws))
    assert code in (0, None), err
    assert "0 of 7 features explained by patterns" in out and "7 done before" in out
    code, out, _ = run_cli(monkeypatch, capsys, "explain", "planted", "--all", "--sample", "3", "-w", str(explain_ws))
    assert code in (0, None) and "of 3 features" in out


@pytest.mark.parametrize(("args", "message"), [
    (("planted", "--explainer", "oracle"), "unknown explainer 'oracle'; choose one of patterns"),
    (("planted", "--scorer", "detection,fuzz"), "unknown scorer 'fuzz'; choose from detection, simulation"),
    (("planted", "--features", "3,24"), "feature 24 is out of range: planted has features 0..23"),
    (("planted", "--features", "3-x"), "--features takes feature ids and ranges such as 1,5,9-20"),
    (("planted", "--features", "3", "--all"), "give either --features or --all, not both"),
    (("planted", "--sample", "0"), "--sample must be at least 1"),
    (("planted", "--batch", "0"), "--batch must be at least 1"),
    (("nope",), "unknown dictionary 'nope'"),
    (("raw",), "dictionary 'raw' has not been analysed yet; run `sparsescope analyze raw` first"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(monkeypatch, capsys, explain_template, args, message):
    before = _counts(explain_template)
    code, _, err = run_cli(monkeypatch, capsys, "explain", *args, "-w", str(explain_template))
    assert code == 2
    assert message in error_line(err)
    assert _counts(explain_template) == before == (0, 0, 4)


def test_a_workspace_without_a_store_is_refused(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "explain", "planted", "-w", str(tmp_path / "empty"))
    assert code == 2 and "no store in" in error_line(err)
    assert not (tmp_path / "empty" / "sparsescope.duckdb").exists()
