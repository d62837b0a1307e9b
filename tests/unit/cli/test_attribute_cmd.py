"""`sparsescope attribute` and `graphs` on tiny-random dictionaries: a graph stored and exported, and every bad
input one `error:` line, exit 2, nothing stored."""
import json

import pytest

from store import session
from store.dictionaries import DictionaryRow, add_dictionary
from store.graphs import list_graphs
from tests.helpers import error_line, run_cli

ARGS = ("--model", "tiny-random", "--prompt", "the cat sat on the mat", "--ablation", "zero")


def _graphs(ws) -> int:
    with session(ws.db_path, read_only=True) as con:
        return len(list_graphs(con))


def test_a_graph_is_stored_listed_and_written_as_json(monkeypatch, capsys, search_ws):
    code, out, err = run_cli(monkeypatch, capsys, "attribute", *ARGS, "--target", " ", "--contrast", "e",
                             "--dictionaries", "res0-topk,res1-relu", "--json", "graph.json",
                             "-w", str(search_ws.root))
    assert code in (0, None), err
    assert "faithfulness: the graph" in out and "recovers" in out
    assert "attribution pruning alone" in out  # the baseline the refined graph must beat, printed beside it
    doc = json.loads((search_ws.root / "graph.json").read_text())
    assert doc["metadata"]["dictionaries"] == ["res0-topk", "res1-relu"]
    assert doc["metadata"]["contrast"] == "e" and doc["metadata"]["ablation"] == "zero"
    assert doc["metadata"]["faithfulness"]["recovered_by_attribution"] is not None
    assert any(n["feature_type"] == "logit" for n in doc["nodes"])
    assert _graphs(search_ws) == 1
    code, out, err = run_cli(monkeypatch, capsys, "graphs", "-w", str(search_ws.root))
    assert code in (0, None) and "res0-topk,res1-relu" in out


@pytest.mark.parametrize("extra, reason", [
    (("--target", "ab", "--dictionaries", "res0-topk"), "is 2 tokens"),
    (("--target", " ", "--contrast", " ", "--dictionaries", "res0-topk"), "is the target itself"),
    (("--target", " ", "--dictionaries", "elsewhere"), "belongs to model 'gpt2'"),
    (("--target", " ", "--dictionaries", "res0-topk,res0-mp"), "both read blocks.0.hook_resid_post"),
    (("--target", " ", "--dictionaries", "res0-topk", "--json", "/tmp/outside.json"), "inside the workspace"),
    (("--target", " ", "--dictionaries", "res0-topk", "--refine", "-1"), "refine must be 0 or more rounds"),
])
def test_bad_input_is_one_line_and_stores_nothing(monkeypatch, capsys, search_ws, extra, reason):
    with session(search_ws.db_path) as con:
        add_dictionary(con, DictionaryRow("elsewhere", "gpt2", "blocks.0.hook_resid_post", "topk", 768, 128, 4,
                                          str(search_ws.root / "dictionaries" / "elsewhere")))
    code, out, err = run_cli(monkeypatch, capsys, "attribute", *ARGS, *extra, "-w", str(search_ws.root))
    assert code == 2
    assert reason in error_line(err)
    assert _graphs(search_ws) == 0


def test_a_prompt_beyond_the_context_is_refused(monkeypatch, capsys, search_ws):
    args = list(ARGS)
    args[args.index("--prompt") + 1] = "x" * 300  # tiny-random: byte tokens, a context of 256
    code, out, err = run_cli(monkeypatch, capsys, "attribute", *args, "--target", " ", "--dictionaries",
                             "res0-topk", "-w", str(search_ws.root))
    assert code == 2 and "beyond the model's context of 256" in error_line(err)
    assert _graphs(search_ws) == 0


def test_no_dictionary_of_the_model_is_refused(monkeypatch, capsys, ws):
    with session(ws.db_path):
        pass  # an empty store
    code, out, err = run_cli(monkeypatch, capsys, "attribute", *ARGS, "--target", " ", "-w", str(ws.root))
    assert code == 2 and "no dictionary of tiny-random" in error_line(err)
    assert _graphs(ws) == 0
