"""The LLM judges: which windows they judge, fuzz's markings (half of the activating windows wrong, by seed), the
verdicts read, the metrics computed from them, and the registry's choice between rule and judge."""
import re
from dataclasses import replace

import numpy as np
import pytest

from analysis.explain.chat import MalformedReply
from analysis.explain.evidence import FeatureEvidence, Vocab
from analysis.explain.judges import (
    N_JUDGED,
    DetectionJudge,
    FuzzJudge,
    fuzz_marks,
    judged_windows,
    parse_verdict,
    spread,
)
from analysis.explain.registry import ExplainFailed, Explanation, resolve_scorers
from analysis.explain.scorers import detection_metrics
from store import InputError
from tests.factories import token_windows

VOCAB = ["<bos>", " the", " cat", " sat", " on", " mat", " dog"]
THE, CAT, SAT, ON, MAT, DOG = range(1, 7)


def feature_evidence(n_pos=10, n_neg=10):
    rng = np.random.default_rng(5)
    ids = rng.integers(THE, DOG + 1, (n_pos, 6)).tolist()
    for row in ids:
        row[2] = CAT
    acts = [[1.0 if t == CAT else 0.0 for t in row] for row in ids]
    held = replace(token_windows(ids, acts), bands=np.arange(n_pos) % 10 - 1)
    quiet = np.array([THE, SAT, ON, MAT, DOG])  # no cat in the non-activating windows
    negatives = replace(token_windows(rng.choice(quiet, (n_neg, 6)).tolist()), bands=np.full(n_neg, -2))
    return FeatureEvidence("d", 7, token_windows([]), held, negatives, Vocab(VOCAB))


class Answers:
    """A chat answering by a rule on the user message, keeping what it was sent."""

    name = "answers"

    def __init__(self, rule):
        self.rule, self.sent = rule, []

    def complete(self, messages, max_tokens):
        self.sent.append(messages[-1]["content"])
        return self.rule(messages[-1]["content"])


def test_spread_and_the_judged_windows():
    assert spread(5, 10).tolist() == [0, 1, 2, 3, 4]
    assert spread(21, 5).tolist() == [0, 5, 10, 15, 20]
    ev = feature_evidence(n_pos=25, n_neg=30)
    windows, truth = judged_windows(ev)
    assert windows.n_windows == 2 * N_JUDGED and truth.tolist() == [True] * N_JUDGED + [False] * N_JUDGED
    # spread over the held-out order, so over the top examples and every band
    assert windows.bands[:N_JUDGED].tolist() == ev.heldout.bands[spread(25, N_JUDGED)].tolist()
    assert (windows.bands[N_JUDGED:] == -2).all()


def test_fuzz_marks_half_the_activating_windows_wrongly_and_by_seed():
    windows, activating = judged_windows(feature_evidence())
    marked, correct = fuzz_marks(windows, activating, seed=0, feature=7)
    fired = windows.acts > 0
    assert correct.sum() == 5 and not correct[~activating].any()
    for w in range(windows.n_windows):
        lo, hi = windows.offsets[w], windows.offsets[w + 1]
        if correct[w]:
            assert (marked[lo:hi] == fired[lo:hi]).all()
        elif activating[w]:  # wrong: as many marks, none on a firing token
            assert marked[lo:hi].sum() == fired[lo:hi].sum() and not (marked[lo:hi] & fired[lo:hi]).any()
        else:
            assert marked[lo:hi].sum() >= 1
    again = fuzz_marks(windows, activating, seed=0, feature=7)
    assert (again[0] == marked).all() and (again[1] == correct).all()
    others = {tuple(fuzz_marks(windows, activating, seed=s, feature=7)[1]) for s in range(1, 6)}
    assert len(others | {tuple(correct)}) > 1


@pytest.mark.parametrize(("reply", "verdict"), [("Yes.", True), ("**no**", False), (" YES, it is", True),
                                                ("1", True), ("No - not here", False)])
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) is verdict


def test_parse_verdict_refuses_anything_else():
    for reply in ("", "Maybe", "The answer is yes"):
        with pytest.raises(MalformedReply):
            parse_verdict(reply)


def test_detection_judge_scores_its_verdicts():
    ev = feature_evidence()
    # says yes when " cat" is in the excerpt: every activating window, and the negatives holding a cat
    chat = Answers(lambda user: "yes" if " cat" in user.split("Excerpt: ")[1] else "no")
    score = DetectionJudge(lambda: chat, seed=0).score(Explanation("the token ' cat'"), ev)
    windows, truth = judged_windows(ev)
    has_cat = np.array([CAT in windows.token_ids[lo:hi] for lo, hi in zip(windows.offsets[:-1],
                                                                           windows.offsets[1:])])
    assert score.values == pytest.approx(detection_metrics(truth, has_cat)) and score.n_examples == 20
    assert len(chat.sent) == 20 and chat.sent[0].startswith("Description: the token ' cat'\n\nExcerpt: ")
    assert "<<" not in "".join(chat.sent)


def test_fuzz_judge_sees_the_marks_and_is_scored_against_them():
    ev = feature_evidence()
    chat = Answers(lambda user: "yes" if all(set(m.split()) == {"cat"} for m in re.findall("<<(.*?)>>", user))
                   else "no")
    score = FuzzJudge(lambda: chat, seed=0).score(Explanation("the token ' cat'"), ev)
    assert all("<<" in sent for sent in chat.sent)
    assert score.values["balanced_accuracy"] == 1.0  # a judge that reads the marks gets all right
    lazy = FuzzJudge(lambda: Answers(lambda user: "yes"), seed=0).score(Explanation("x"), ev)
    assert lazy.values["recall"] == 1.0 and lazy.values["balanced_accuracy"] == 0.5


def test_an_unreadable_verdict_fails_the_feature():
    with pytest.raises(ExplainFailed, match="detection-llm: no yes or no"):
        DetectionJudge(lambda: Answers(lambda user: "perhaps"), 0).score(Explanation("x"), feature_evidence())


def test_resolve_scorers_turns_rule_detection_into_the_judge_for_text_explanations():
    assert resolve_scorers("llm", None) == ("detection-llm", "fuzz")
    assert resolve_scorers("llm", ("detection", "fuzz", "detection-llm")) == ("detection-llm", "fuzz")
    assert resolve_scorers("patterns", None) == ("detection", "simulation")
    assert resolve_scorers("patterns", ("detection", "fuzz")) == ("detection", "fuzz")
    with pytest.raises(InputError, match="scorer 'simulation' applies a rule, which explainer 'llm' does not give"):
        resolve_scorers("llm", ("simulation",))


class FirstToken:
    """The same local model answering each question alone: its greedy reply's first token (the per-window path)."""

    name = "first token"

    def __init__(self, chat):
        self.chat = chat

    def complete(self, messages, max_tokens):
        return self.chat.complete(messages, 1)


def biased_tiny_chat(ev):
    """The tiny model as a chat whose greedy first token is always 'y' or 'n': both get a large bias, split so
    that about half of the judge's questions about `ev` go each way (the random model alone never says either).
    The judge's system prompt is shortened to fit the byte-level model's 256-token context."""
    import torch

    from analysis.explain.chat import EmbeddedChat

    chat = EmbeddedChat("tiny-random", device="cpu")
    model, encode = chat.model, chat.model.tokenizer.encode
    y, n = encode("y", add_special_tokens=False)[0], encode("n", add_special_tokens=False)[0]
    asked = Answers(lambda user: "yes")
    DetectionJudge(lambda: asked, 0).score(Explanation("the token ' cat'"), ev)
    questions = [[{"role": "system", "content": DetectionJudge.system}, {"role": "user", "content": sent}]
                 for sent in asked.sent]
    with torch.no_grad():
        gaps = [float(logits[y] - logits[n]) for logits in
                (model(chat.prompt_ids(q)[None])[0, -1] for q in questions)]
        model.unembed.b_U[y] += 50 - float(np.median(gaps))
        model.unembed.b_U[n] += 50
    return chat, questions


def test_the_batched_verdicts_are_the_greedy_replies_verdicts(one_thread, monkeypatch):
    from analysis.explain import yes_no

    monkeypatch.setattr(yes_no, "BATCH", 7)  # several batches of right-padded prompts after the shared start
    monkeypatch.setattr(DetectionJudge, "system", "Say yes or no.")
    ev = feature_evidence()
    chat, questions = biased_tiny_chat(ev)
    one_by_one = [parse_verdict(FirstToken(chat).complete(q, 3)) for q in questions]
    assert 0 < sum(one_by_one) < len(questions)  # both answers occur
    assert chat.yes_no(questions) == one_by_one
    assert 0 < yes_no.shared_start([chat.prompt_ids(q) for q in questions]) < len(chat.prompt_ids(questions[0]))
    # the judge asks the batch when the chat can answer one, and scores it as it scores replies one by one
    batched = DetectionJudge(lambda: chat, 0).score(Explanation("the token ' cat'"), ev)
    single = DetectionJudge(lambda: FirstToken(chat), 0).score(Explanation("the token ' cat'"), ev)
    assert batched == single


def test_answer_tokens_and_the_shared_start():
    import torch

    from analysis.explain.yes_no import answer_tokens, shared_start
    from sae.models import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    yes, no = answer_tokens(tokenizer)
    assert sorted(tokenizer.decode([t]) for t in yes) == ["1", "Y", "y"]  # bytes: the one-letter words only
    assert sorted(tokenizer.decode([t]) for t in no) == ["0", "N", "n"]
    ids = [torch.tensor(p) for p in ([1, 2, 3, 4], [1, 2, 5], [1, 2, 3, 9, 9])]
    assert shared_start(ids) == 2 and shared_start(ids[:1]) == 3 and shared_start([ids[0], ids[0]]) == 3


def test_the_inference_layout_keeps_the_model_s_outputs(one_thread):
    import torch

    from analysis.explain.chat import inference_layout
    from sae.models import load_model

    model = load_model("tiny-random", device="cpu")
    tokens = torch.tensor([[0, 5, 9, 200, 17]])
    with torch.no_grad():
        before = model(tokens)
        assert inference_layout(model) is model and model.W_U.T.is_contiguous()
        assert torch.equal(model(tokens), before)


def test_a_tokenizer_without_one_token_verdicts_fails_the_feature():
    import types

    from analysis.explain.yes_no import yes_no_verdicts

    two_tokens = types.SimpleNamespace(encode=lambda text, add_special_tokens: [1, 2])
    with pytest.raises(MalformedReply, match="holds no yes word or no no word as one token"):
        yes_no_verdicts(types.SimpleNamespace(tokenizer=two_tokens), [np.array([1, 2])])
