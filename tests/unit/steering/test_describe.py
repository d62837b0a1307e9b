"""Steer by words: the features a description selects (explanations and labels), their strengths, a run on the tiny
model with the usual measures, and bad input as one error line with exit 2 and nothing stored."""
from __future__ import annotations

import re
import shutil

import pytest
import torch

from analysis.steering.describe import STRENGTH, described_effect, description_words, interventions, propose
from store import connect, session
from store.errors import InputError
from store.explanations import ExplanationRow, write_batch
from store.steering import list_runs
from tests.factories import TINY_HOOK, explained_workspace, saved_dictionary
from tests.helpers import error_line, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def explained_template(tmp_path_factory):
    """The report store and the planted dictionary, every live planted feature explained by `patterns` (feature f
    fires on token 1 + f: 5 on ' cat', 11 on ' dog')."""
    from analysis.explain import ExplainRequest, run_explain

    root = explained_workspace(tmp_path_factory.mktemp("describe") / "ws")
    run_explain(root / "sparsescope.duckdb", ExplainRequest("planted"), progress=False)
    return root


@pytest.fixture
def explained(explained_template, tmp_path):
    root = shutil.copytree(explained_template, tmp_path / "ws")
    con = connect(root / "sparsescope.duckdb")
    yield con
    con.close()


def _max_act(con, dictionary, feature) -> float:
    return con.execute("SELECT max_act FROM features WHERE dictionary = ? AND feature = ?",
                       [dictionary, feature]).fetchone()[0]


def test_a_description_matching_an_explanation_selects_that_feature(explained):
    proposal = propose(explained, "cat", dictionary="planted")
    assert [(p.dictionary, p.feature) for p in proposal.features] == [("planted", 5)]
    (cat,) = proposal.features
    assert cat.explanation == "' cat'; 100% of firings" and cat.explainer == "patterns" and cat.label == ""
    assert cat.strength == STRENGTH and cat.amount == pytest.approx(STRENGTH * _max_act(explained, "planted", 5))
    two = propose(explained, "a dog, then a cat", dictionary="planted")  # function words are not searched
    assert proposal.words == ("cat",) and two.words == ("dog,", "then", "cat")
    assert {p.feature for p in propose(explained, "dog cat", dictionary="planted").features} == {5, 11}


def test_labels_outrank_explanations_and_join_them(explained):
    # without a dictionary the best match decides: topk-demo:1 is labelled "cat and dog"
    best = propose(explained, "cat")
    assert best.dictionary == "topk-demo" and best.features[0].feature == 1
    assert best.features[0].label == "cat and dog" and best.features[0].explanation is None
    explained.execute("INSERT INTO feature_labels (dictionary, feature, label, notes) VALUES "
                      "('planted', 11, 'my cat', ''), ('planted', 0, 'cat lover', '')")  # 0 never fires
    proposal = propose(explained, "cat", dictionary="planted", top=5, strength=2.0)
    assert [p.feature for p in proposal.features] == [11, 5]
    labelled, explained_only = proposal.features
    assert labelled.label == "my cat" and labelled.explanation == "' dog'; 100% of firings"
    assert labelled.match > explained_only.match
    # the rule: strength x (match / best match), in units of the feature's max activation
    assert labelled.strength == 2.0
    assert explained_only.strength == pytest.approx(2.0 * explained_only.match / labelled.match)
    assert explained_only.amount == pytest.approx(explained_only.strength * _max_act(explained, "planted", 5))
    assert [p.feature for p in propose(explained, "cat", dictionary="planted", top=1).features] == [11]


def test_words_and_interventions():
    assert description_words("The CAT and the dog") == ("cat", "dog")
    assert description_words("the and") == ("the", "and")  # nothing else left: look for those tokens


def test_interventions_follow_the_proposal(explained):
    proposal = propose(explained, "cat dog", dictionary="planted", strength=3.0)
    specs = interventions(proposal, positions="generated")
    assert [(s.mode, s.dictionary, s.feature, s.positions) for s in specs] == [
        ("add", "planted", p.feature, "generated") for p in proposal.features]
    assert [s.strength for s in specs] == [p.strength for p in proposal.features]
    for mode in ("ablate", "orthogonal", "cap"):
        with pytest.raises(InputError, match="use --mode add or clamp"):
            interventions(proposal, mode=mode)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"description": "  "}, "the description is empty"),
    ({"description": "cat", "dictionary": "nope"}, "unknown dictionary 'nope'"),
    ({"description": "zebra"}, "no feature that fires has an explanation or label matching 'zebra'; try other "
                               "words, or run `sparsescope explain DICT`"),
    ({"description": "cat", "dictionary": "mp-demo"}, "dictionary 'mp-demo' has no explanations or labels yet; "
                                                      "run `sparsescope explain mp-demo` first"),
    ({"description": "cat", "top": 0}, "--top must be between 1 and 32"),
    ({"description": "cat", "strength": -1.0}, "--strength must be positive"),
])
def test_bad_descriptions(explained, kwargs, message):
    with pytest.raises(InputError) as info:
        propose(explained, **kwargs)
    assert message in str(info.value)


def test_a_workspace_without_explanations(con):
    with pytest.raises(InputError, match=r"this workspace has no explanations or labels yet; "
                                         r"run `sparsescope explain DICT` first"):
        propose(con, "cat")


# ------------------------------------------------------------------------------------------- runs, CLI

@pytest.fixture
def steer_ws(ws):
    """A workspace with a tiny-random topk dictionary `tk`: features 7 ("python code"), 9 (labelled "snake
    language") and 11 ("cooking") explained and analysed, 12 explained but never fired."""
    from store.dictionaries import DictionaryRow, add_dictionary

    torch.manual_seed(3)
    folder = saved_dictionary(ws.dictionaries_dir / "tk", arch="topk", d_in=64, d_sae=128, k=4, hook_name=TINY_HOOK)
    with session(ws.db_path) as con:
        add_dictionary(con, DictionaryRow("tk", "tiny-random", TINY_HOOK, "topk", 64, 128, 4, str(folder)))
        con.execute("INSERT INTO features (dictionary, feature, count, density, mean_act, max_act) VALUES "
                    "('tk', 7, 10, 0.1, 0.5, 2.5), ('tk', 9, 10, 0.1, 0.3, 1.5), ('tk', 11, 5, 0.05, 0.2, 1.0), "
                    "('tk', 12, 0, 0.0, 0.0, 0.0)")
        write_batch(con, "tk", "patterns", [ExplanationRow(7, "patterns", "python code: ' def', ' return'"),
                                            ExplanationRow(11, "patterns", "cooking recipes"),
                                            ExplanationRow(12, "patterns", "python code too")], [], [], [])
        con.execute("INSERT INTO feature_labels (dictionary, feature, label, notes) VALUES "
                    "('tk', 9, 'python the snake language', '')")
    return ws


def test_cli_steers_by_words_and_reports_the_effect(steer_ws, monkeypatch, capsys, tiny_model):
    code, out, err = run_cli(monkeypatch, capsys, "steer", "-w", str(steer_ws.root), "--describe", "python code",
                             "--prompt", "Hello", "--raw", "--max-new-tokens", "4", "--greedy")
    assert code in (0, None), err
    for needle in ("steering toward python code (searched: python, code; 2 feature(s) of tk)",
                   "tk:7: strength 4 x max activation 2.5 = 10 (match 2.25)", "label: python the snake language",
                   "explanation (patterns): python code: ' def', ' return'", "KL(steered || default)", "perplexity",
                   "stored as steering run 1",
                   "the selected features' mean activation on the continuation"):
        assert needle in out, out
    assert "tk:11" not in out and "tk:12" not in out  # no match; never fired
    (run,) = list_runs(connect(steer_ws.db_path, read_only=True))
    specs = run.config["interventions"]
    assert [(s["dictionary"], s["feature"], s["mode"]) for s in specs] == [("tk", 7, "add"), ("tk", 9, "add")]
    assert specs[0]["strength"] == STRENGTH and 0 < specs[1]["strength"] < STRENGTH
    assert {t["label"] for t in run.measures["targets"]} == {"tk:7", "tk:9"}
    assert all({"default", "steered"} <= set(t) for t in run.measures["targets"])


def test_the_effect_averages_the_selected_features(steer_ws, tiny_model):
    from analysis.steering.lab import SteerConfig, steer
    from analysis.steering.runs import load_dictionaries

    with session(steer_ws.db_path) as con:
        proposal = propose(con, "python", dictionary="tk")
        config = SteerConfig("Once upon", interventions(proposal), model="tiny-random", chat=False,
                             max_new_tokens=5, temperature=0.0)
        result = steer(tiny_model, config, load_dictionaries(con, config, steer_ws, device="cpu"))
    effect = described_effect(result, proposal)
    by_label = {t["label"]: t for t in result.measures["targets"]}
    assert [r[0] for r in effect.per_feature] == ["tk:9", "tk:7"]
    assert effect.steered_mean == pytest.approx(sum(by_label[r]["steered"]["mean"] for r in ("tk:7", "tk:9")) / 2)
    assert effect.default_mean == pytest.approx(sum(by_label[r]["default"]["mean"] for r in ("tk:7", "tk:9")) / 2)
    assert effect.met == (effect.steered_mean > effect.default_mean)


@pytest.mark.parametrize(("args", "message"), [
    (("--describe", ""), "the description is empty"),
    (("--describe", "python", "--dictionary", "nope"), "unknown dictionary 'nope'"),
    (("--describe", "zebra"), "no feature that fires has an explanation or label matching 'zebra'"),
    (("--describe", "python", "--top", "0"), "--top must be between 1 and 32"),
    (("--describe", "python", "--feature", "tk:7"), "--describe picks the features itself; leave out --feature"),
    (("--describe", "python", "--mode", "ablate"), "use --mode add or clamp"),
    (("--describe", "python", "--strength", "x"), "--strength must be a number"),
    (("--feature", "tk:7", "--top", "2"), "--dictionary and --top go with --describe"),
])
def test_cli_bad_input_is_one_line_and_stores_nothing(steer_ws, monkeypatch, capsys, args, message):
    code, _, err = run_cli(monkeypatch, capsys, "steer", "-w", str(steer_ws.root), "--prompt", "Hello", "--raw",
                           "--max-new-tokens", "3", *args)
    assert code == 2 and message in error_line(err)
    with session(steer_ws.db_path) as con:
        assert list_runs(con) == []


def test_cli_without_explanations(ws, monkeypatch, capsys):
    ws.db_path.parent.mkdir(parents=True, exist_ok=True)
    connect(ws.db_path).close()
    code, _, err = run_cli(monkeypatch, capsys, "steer", "-w", str(ws.root), "--describe", "python", "--prompt", "Hi")
    assert code == 2
    assert "this workspace has no explanations or labels yet" in error_line(err)


# ------------------------------------------------------------------------- a store built by the pipeline

@pytest.fixture(scope="module")
def pipeline_store(tmp_path_factory, tiny_model):
    """A store filled by the real pipeline on the tiny model: a corpus, an activation cache, a TopK dictionary
    `tk` trained on it, analysed, and every live feature explained by `patterns` (as `sparsescope explain`)."""
    from analysis.activations import build_cache
    from analysis.corpora import add_corpus
    from analysis.explain import ExplainRequest, run_explain
    from analysis.features.analyze import AnalyzeRequest, analyze_dictionary
    from analysis.training import TrainRequest, train_dictionary
    from store import Workspace

    ws = Workspace.resolve(tmp_path_factory.mktemp("pipeline") / "ws")
    src = tmp_path_factory.mktemp("src") / "t.txt"
    words = "cat dog sun rain map key box cup hat pen".split()
    src.write_text("".join(f"The {words[i % 10]} and the {words[i * 3 % 10]} ran {i % 7} miles.\n\n"
                           for i in range(300)))
    torch.manual_seed(0)
    with session(ws.db_path) as con:
        add_corpus(con, "t", str(src), "tiny-random", ctx=32)
        cache = build_cache(ws, con, tiny_model, TINY_HOOK, "t", tokens=96 * 32, progress=False)
        train_dictionary(ws, con, TrainRequest(arch="topk", activations=cache.path.name, name="tk", d_sae=64, k=4,
                                               tokens=2048, batch=128, lr=1e-2), lm=tiny_model, progress=False)
    analyze_dictionary(ws, AnalyzeRequest("tk", corpus="t", tokens=96 * 32, examples=10, quantiles=4),
                       lm=tiny_model, progress=False)
    run_explain(ws.db_path, ExplainRequest("tk"), progress=False)
    return ws.db_path


@pytest.mark.slow
def test_on_a_pipeline_store_a_description_matching_an_explanation_selects_its_feature(pipeline_store):
    """Describe each explained feature by the tokens its explanation quotes: wherever that description matches
    the feature's own explanation better than any other one, steering by it selects that feature first."""
    from store.explanations import search_explanations

    con = connect(pipeline_store, read_only=True)
    try:
        rows = con.execute("SELECT e.feature, e.text FROM explanations e JOIN features f "
                           "USING (dictionary, feature) WHERE e.dictionary = 'tk' AND f.count > 0").fetchall()
        checked = 0
        for feature, text in rows:
            quoted = [t.strip() for t in re.findall(r"'([^']+)'", text.split(";")[0]) if t.strip()]
            if not quoted:
                continue
            description = " ".join(dict.fromkeys(quoted))
            proposal = propose(con, description, dictionary="tk")
            hits = search_explanations(con, list(proposal.words), limit=500, dictionary="tk")
            best = [h.feature for h in hits if h.score == hits[0].score]
            if best == [feature]:
                checked += 1
                assert proposal.features[0].feature == feature, (feature, text, proposal)
                assert proposal.features[0].explanation == text and proposal.features[0].strength == STRENGTH
        assert len(rows) > 10 and checked >= 3, (len(rows), checked)
    finally:
        con.close()
