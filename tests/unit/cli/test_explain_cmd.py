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
    (("planted", "--explainer", "oracle"), "unknown explainer 'oracle'; choose one of patterns, llm"),
    (("planted", "--scorer", "detection,fizz"), "unknown scorer 'fizz'; choose from detection, simulation, "
                                                "detection-llm, fuzz"),
    (("planted", "--explainer", "llm", "--scorer", "simulation"), "scorer 'simulation' applies a rule, which "
                                                                  "explainer 'llm' does not give"),
    (("planted", "--explainer", "llm", "--endpoint", "http://127.0.0.1:9/v1"), "--endpoint needs --model NAME"),
    (("planted", "--model", "m"), "--endpoint and --model are for the language model of llm"),
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


def test_explain_with_the_llm_explainer_through_an_endpoint(monkeypatch, capsys, explain_ws):
    from tests.chat_server import CannedChatServer

    with CannedChatServer() as server:
        code, out, err = run_cli(monkeypatch, capsys, "explain", "planted", "--features", "1-6", "--explainer",
                                 "llm", "--endpoint", server.url, "--model", "canned", "--scorer", "detection,fuzz",
                                 "-w", str(explain_ws))
    assert code in (0, None), err
    assert "planted: 6 of 6 features explained by llm" in out
    for word in ("detection-llm", "fuzz", "balanced_accuracy", "baseline mean"):
        assert word in out
    assert _counts(explain_ws)[:2] == (6, 6 * 2 * 5)


def test_a_refusing_endpoint_is_one_error_line(monkeypatch, capsys, explain_ws):
    from tests.chat_server import CannedChatServer

    with CannedChatServer() as server:
        url = server.url
    code, _, err = run_cli(monkeypatch, capsys, "explain", "planted", "--explainer", "llm", "--endpoint", url,
                           "--model", "canned", "-w", str(explain_ws))
    assert code == 2
    assert "(connection refused); stopped at batch 1 of 1: 0 of 23 features were written" in error_line(err)
    assert _counts(explain_ws)[:2] == (0, 0)


def test_explain_help_names_every_explainer_scorer_and_the_endpoint(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "explain", "--help")
    text = " ".join(w for w in out.split() if w not in "│╭╮╰╯")
    for word in ("llm:", "detection-llm:", "fuzz:", "detection means detection-llm", "llm: detection-llm,fuzz",
                 "llama.cpp", "Seconds one endpoint call may take (default 60)"):
        assert word in text, word
