"""The `llm` explainer and the judged detection on the embedded SmolLM2-135M-Instruct, end to end on a few planted
features: the run completes, every explanation is a parsed sentence or the feature is reported failed, and every
score carries its baseline. The scores themselves are whatever the small model earns (not asserted)."""
from __future__ import annotations

import pytest
import torch

from analysis.explain.chat import EmbeddedChat
from analysis.explain.run import ExplainRequest, run_explain
from store.explanations import get_explanations

pytestmark = pytest.mark.slow
FEATURES = (5, 9)


@pytest.fixture(autouse=True)
def one_thread():
    """Decoding a token at a time is latency-bound: a second thread mostly waits on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_prompt_goes_through_the_chat_template():
    chat = EmbeddedChat()
    text = chat.model.tokenizer.decode(chat.prompt_ids([{"role": "user", "content": "Hello"}]))
    assert text.startswith("<|im_start|>") and text.rstrip().endswith("<|im_start|>assistant")


def test_llm_explainer_and_judge_on_the_embedded_model(con):
    from tests.factories import build_report_store, planted_dictionary

    build_report_store(con, n_features=8)
    planted_dictionary(con)
    result = run_explain(con, ExplainRequest("planted", features=FEATURES, explainer="llm", scorers=("detection",)))
    explained = {e.feature: e.text for e in get_explanations(con, "planted", "llm")}
    assert set(explained) | set(result.failed) == set(FEATURES)
    assert all(text.strip() and "\n" not in text and len(text) <= 203 for text in explained.values())
    metric, summary = result.summaries["detection-llm"]
    assert metric == "balanced_accuracy" and summary.n == len(explained) - sum(f in result.failed
                                                                               for f in explained)
    rows = con.execute("SELECT feature, value, baseline, n_examples FROM explanation_scores "
                       "WHERE scorer = 'detection-llm' AND metric = 'balanced_accuracy'").fetchall()
    assert all(value is not None and baseline is not None and n > 0 for _, value, baseline, n in rows)
    print("llm on the embedded model:", explained, rows, summary)


def test_the_batched_verdicts_agree_with_the_greedy_replies():
    """Wherever the embedded model's greedy reply to a judge's question is a verdict, the batched yes_no gives
    the same one."""
    from analysis.explain.chat import MalformedReply
    from analysis.explain.judges import DETECTION_SYSTEM, parse_verdict

    chat = EmbeddedChat()
    excerpts = ["the cat sat on the mat", "a dog ran home", "cats and dogs", "def f(x): return x", "it rained",
                "import numpy as np", "Paris is in France", "my cat is asleep"]
    questions = [[{"role": "system", "content": DETECTION_SYSTEM},
                  {"role": "user", "content": f"Description: the word ' cat'\n\nExcerpt: {e}\n\nAnswer yes or no."}]
                 for e in excerpts]
    batched = chat.yes_no(questions)
    compared = 0
    for question, verdict in zip(questions, batched):
        try:
            greedy = parse_verdict(chat.complete(question, 3))
        except MalformedReply:
            continue
        compared += 1
        assert verdict == greedy, question[-1]["content"]
    assert compared >= len(questions) // 2
