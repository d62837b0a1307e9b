"""run_explain with the llm explainer and judges over a real local HTTP server (tests/chat_server.py): 50 planted
features end to end, an endpoint that refuses or hangs mid-run (one error line, earlier batches kept, a rerun
continues), a malformed reply (that feature failed, the run goes on)."""
import pytest

from analysis.explain.run import ExplainRequest, run_explain
from store import InputError
from store.explanations import get_explanations
from tests.factories import REPORT_VOCAB


def _request(server, **fields):
    return ExplainRequest("planted", **{"explainer": "llm", "endpoint": server.url, "model": "canned",
                                        "timeout": 5.0} | fields)


def _scored(con, scorer):
    return {r[0] for r in con.execute("SELECT DISTINCT feature FROM explanation_scores WHERE scorer = ?",
                                      [scorer]).fetchall()}


def test_fifty_features_end_to_end_beat_the_baseline(planted50, chat_server):
    con, tokens = planted50
    server = chat_server()
    result = run_explain(con, _request(server, batch=16))
    assert len(tokens) == 50 and result.explained == 50 and not result.failed
    for e in get_explanations(con, "planted", "llm"):
        if ">" not in REPORT_VOCAB[tokens[e.feature]]:  # " <b>" closes its own mark early
            assert e.text == f"The token '{REPORT_VOCAB[tokens[e.feature]]}'." and e.rule is None
    assert set(result.summaries) == {"detection-llm", "fuzz"}
    for name in ("detection-llm", "fuzz"):
        metric, summary = result.summaries[name]
        assert metric == "balanced_accuracy" and summary.n == 50
        assert summary.mean >= 0.85 and summary.baseline_mean <= 0.6, (name, summary)
    rows = con.execute("SELECT count(*), count(baseline) FILTER (WHERE metric = 'balanced_accuracy') "
                       "FROM explanation_scores").fetchone()
    assert rows == (50 * 2 * 5, 50 * 2)  # every metric of both scorers; every headline with its baseline
    # one explain request per feature, then per scorer 2 x (judged windows) questions
    explains = [r for r in server.requests if r["messages"][-1]["content"].startswith("Examples:")]
    assert len(explains) == 50 and all(r["model"] == "canned" for r in server.requests)
    again = run_explain(con, _request(server, batch=16))
    assert again.plan.todo == [] and len(server.requests) == len(explains) + sum(
        1 for r in server.requests if not r["messages"][-1]["content"].startswith("Examples:"))


@pytest.mark.parametrize("fault", ["refuse_on", "hang_on"])
def test_an_endpoint_lost_mid_run_stops_with_one_line_and_keeps_earlier_batches(planted, chat_server, fault):
    con, tokens = planted
    features = sorted(tokens)[:12]
    lost_at = features[6]  # in the second batch of five
    server = chat_server(**{fault: REPORT_VOCAB[tokens[lost_at]]})
    request = _request(server, features=tuple(features), batch=5, timeout=0.5)
    with pytest.raises(InputError) as caught:
        run_explain(con, request)
    message = str(caught.value)
    assert "\n" not in message and message.endswith(
        "stopped at batch 2 of 3: 5 of 12 features were written before it and are kept (rerun to continue)")
    assert ("connection refused" if fault == "refuse_on" else "did not answer within 0.5 s") in message
    assert {e.feature for e in get_explanations(con, "planted", "llm")} == set(features[:5])
    assert _scored(con, "fuzz") == set(features[:5])
    healthy = chat_server()
    resumed = run_explain(con, _request(healthy, features=tuple(features), batch=5))
    assert resumed.plan.todo == features[5:] and resumed.explained == 7 and not resumed.failed


def test_a_malformed_reply_fails_that_feature_and_the_run_goes_on(planted, chat_server):
    con, tokens = planted
    bad = sorted(tokens)[3]
    server = chat_server(malformed=frozenset({REPORT_VOCAB[tokens[bad]]}))
    result = run_explain(con, _request(server, batch=4))
    assert result.failed == [bad] and result.explained == len(tokens) - 1
    assert bad not in {e.feature for e in get_explanations(con, "planted", "llm")}
    assert _scored(con, "detection-llm") == set(tokens) - {bad}
    again = run_explain(con, _request(chat_server(), batch=4))
    assert again.plan.todo == [bad] and again.explained == 1 and not again.failed


def test_a_judge_reply_without_a_verdict_leaves_that_scorer_unscored(planted, chat_server, monkeypatch):
    import tests.chat_server as canned

    con, tokens = planted
    server = chat_server()
    real = canned.canned_reply
    monkeypatch.setattr(canned, "canned_reply", lambda messages: "Perhaps." if "<<" in messages[-1]["content"]
                        and not messages[-1]["content"].startswith("Examples:") else real(messages))
    result = run_explain(con, _request(server, features=(1, 2, 3)))
    assert result.failed == [1, 2, 3] and result.explained == 3  # explained, detection scored, fuzz not
    assert _scored(con, "detection-llm") == {1, 2, 3} and _scored(con, "fuzz") == set()


@pytest.mark.parametrize(("fields", "message"), [
    ({"endpoint": "http://127.0.0.1:1/v1"}, "--endpoint needs --model NAME"),
    ({"endpoint": "127.0.0.1:8080", "model": "m"}, "--endpoint takes an http:// or https:// URL"),
    ({"endpoint": "http://h/v1", "model": "m", "timeout": 0}, "--timeout must be more than 0"),
    ({"explainer": "patterns", "model": "m"}, "--endpoint and --model are for the language model of llm, "
                                             "detection-llm, fuzz; explainer 'patterns' with detection, simulation "
                                             "uses none"),
])
def test_bad_llm_options_are_one_input_error(fields, message):
    request = ExplainRequest("planted", **{"explainer": "llm"} | fields)
    with pytest.raises(InputError, match=message.replace(".", r"\.").replace("(", r"\(")):
        request.check()
