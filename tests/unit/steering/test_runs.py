"""Steering runs in the store and the `sparsescope steer` command: round trip, re-run, bad input stores nothing."""
from __future__ import annotations

import pytest
import torch

from store import connect, session
from store.errors import InputError
from store.steering import add_run, feature_max_acts, get_run, list_runs
from tests.factories import saved_dictionary
from tests.helpers import run_cli

HOOK = "blocks.0.hook_resid_post"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def steer_ws(ws):
    """A workspace with a tiny-random topk dictionary `tk` (features 0..127), analysed for feature 7 only."""
    from store.dictionaries import DictionaryRow, add_dictionary

    torch.manual_seed(3)
    folder = saved_dictionary(ws.dictionaries_dir / "tk", arch="topk", d_in=64, d_sae=128, k=4, hook_name=HOOK)
    with session(ws.db_path) as con:
        add_dictionary(con, DictionaryRow("tk", "tiny-random", HOOK, "topk", 64, 128, 4, str(folder)))
        con.execute("INSERT INTO features (dictionary, feature, count, density, mean_act, max_act) "
                    "VALUES ('tk', 7, 10, 0.1, 0.5, 2.5)")
    return ws


def _runs(ws) -> list:
    with session(ws.db_path) as con:
        return list_runs(con)


def test_store_round_trip(con):
    run_id = add_run(con, "m", "d", {"prompt": "hi", "seed": 0}, ["a", "b"], ["c", "d"], {"kl_mean": 0.25})
    row = get_run(con, run_id)
    assert (row.model, row.dictionary, row.config, row.default_texts, row.steered_texts, row.measures) == (
        "m", "d", {"prompt": "hi", "seed": 0}, ["a", "b"], ["c", "d"], {"kl_mean": 0.25})
    assert [r.id for r in list_runs(con)] == [run_id] and list_runs(con, dictionary="other") == []
    with pytest.raises(InputError, match="no steering run 99"):
        get_run(con, 99)


def test_feature_max_acts_reads_analysed_features(con):
    con.execute("INSERT INTO features (dictionary, feature, count, density, mean_act, max_act) VALUES "
                "('d', 1, 1, 0.1, 0.2, 3.0), ('d', 2, 1, 0.1, 0.2, 4.0), ('e', 1, 1, 0.1, 0.2, 9.0)")
    assert feature_max_acts(con, "d", [1, 5]) == {1: 3.0}
    assert feature_max_acts(con, "d") == {1: 3.0, 2: 4.0} and feature_max_acts(con, "d", []) == {}


def test_rerun_from_the_store_reproduces_the_text(steer_ws, tiny_model):
    from analysis.steering.lab import Intervention, SteerConfig, steer
    from analysis.steering.runs import load_dictionaries, load_run, record_run

    config = SteerConfig("Once upon", (Intervention("add", dictionary="tk", feature=7, strength=3.0),),
                         model="tiny-random", chat=False, max_new_tokens=6, samples=2, temperature=1.0, seed=5)
    with session(steer_ws.db_path) as con:
        dictionaries = load_dictionaries(con, config, steer_ws, device="cpu")
        first = steer(tiny_model, config, dictionaries)
        run_id = record_run(con, first)
        again_config, numbers = load_run(con, run_id)
    assert again_config == config and numbers == first.numbers
    assert "2.5 (store)" in first.notes[0]
    again = steer(tiny_model, again_config, dictionaries, numbers)
    assert again.steered_texts == first.steered_texts and again.default_texts == first.default_texts
    assert again.measures == first.measures


def test_cli_steer_prints_stores_and_reruns(steer_ws, monkeypatch, capsys):
    ws = str(steer_ws.root)
    code, out, err = run_cli(monkeypatch, capsys, "steer", "-w", ws, "--prompt", "Hello", "--feature", "tk:7", "--raw",
                             "--samples", "2", "--max-new-tokens", "4", "--seed", "3")
    assert code == 0, err
    assert "default" in out and "steered" in out and "KL(steered || default)" in out
    assert "stored as steering run 1" in out
    code, out, err = run_cli(monkeypatch, capsys, "steer", "-w", ws, "--rerun", "1")
    assert code == 0, err
    first, second = sorted(_runs(steer_ws), key=lambda r: r.id)
    assert second.steered_texts == first.steered_texts and second.config == first.config
    code, out, _ = run_cli(monkeypatch, capsys, "steer", "-w", ws, "--list")
    assert code == 0 and "Hello" in out
    code, out, err = run_cli(monkeypatch, capsys, "steer", "-w", ws, "--prompt", "Hello", "--feature", "tk:3", "--raw",
                             "--max-new-tokens", "3", "--sweep", "0,8", "--mode", "add")
    assert code == 0, err
    assert len(_runs(steer_ws)) == 4 and "perplexity" in out


@pytest.mark.parametrize("args, needle", [
    (["--feature", "nope:1"], "unknown dictionary 'nope'"),
    (["--feature", "tk:500"], "feature 500 is not in dictionary 'tk' (features 0..127)"),
    (["--feature", "tk"], "a feature is DICT:ID"),
    (["--feature", "tk:1", "--strength", "abc"], "--strength must be a number"),
    (["--feature", "tk:1", "--strength", "inf"], "--strength must be a finite number"),
    (["--feature", "tk:1", "--prompt", ""], "the prompt is empty"),
    (["--feature", "tk:1", "--prompt", "y" * 400], "longer than tiny-random's context of 256 tokens"),
    (["--feature", "tk:1", "--mode", "boost"], "mode must be one of add, clamp, ablate"),
    (["--feature", "tk:1", "--sweep", "1,nan"], "--sweep must be a finite number"),
    (["--rerun", "42"], "no steering run 42"),
    (["--feature", "tk:1", "--mode", "project"], "mode must be one of add, clamp, ablate, orthogonal, cap"),
    (["--feature", "tk:1", "--mode", "cap"], "cap needs a value"),
    (["--feature", "tk:1", "--top-p", "0"], "top_p must be in (0, 1]"),
    (["--feature", "tk:1", "--top-p", "1.5"], "top_p must be in (0, 1]"),
    (["--feature", "tk:1", "--top-p", "-0.2"], "top_p must be in (0, 1]"),
    (["--feature", "tk:1", "--top-p", "nan"], "--top-p must be a finite number"),
    (["--feature", "tk:1", "--mode", "cap", "--value", "1", "--sweep", "0,1"], "which cap does not use"),
])
def test_cli_bad_input_is_one_line_and_stores_nothing(steer_ws, monkeypatch, capsys, args, needle):
    base = ["steer", "-w", str(steer_ws.root), "--raw", "--max-new-tokens", "3"]
    if "--prompt" not in args:
        base += ["--prompt", "Hello"]
    code, _, err = run_cli(monkeypatch, capsys, *base, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert _runs(steer_ws) == []


def test_cli_steers_with_two_features_in_the_geometric_modes(steer_ws, monkeypatch, capsys):
    ws = str(steer_ws.root)
    base = ["steer", "-w", ws, "--prompt", "Hello", "--feature", "tk:7", "--feature", "tk:3", "--raw",
            "--max-new-tokens", "3", "--temperature", "1", "--top-p", "0.5"]
    code, out, err = run_cli(monkeypatch, capsys, *base, "--mode", "orthogonal", "--strength", "0")
    assert code == 0, err
    out = " ".join(out.split())  # rich wraps long lines
    assert "orthogonal: strength 0 multiplies the component" in out and "tk:3 on the continuation" in out
    code, out, err = run_cli(monkeypatch, capsys, *base, "--mode", "cap", "--value", "-1")
    assert code == 0, err
    assert "at most -1 (raw units)" in " ".join(out.split())
    stored = sorted(_runs(steer_ws), key=lambda r: r.id)
    assert [[(i["mode"], i["feature"]) for i in r.config["interventions"]] for r in stored] == [
        [("orthogonal", 7), ("orthogonal", 3)], [("cap", 7), ("cap", 3)]]
    assert [r.config["top_p"] for r in stored] == [0.5, 0.5]
    assert stored[1].config["interventions"][0]["value"] == -1.0


def test_migration_creates_the_table():
    con = connect(":memory:")
    assert con.execute("SELECT count(*) FROM steering_runs").fetchone()[0] == 0
