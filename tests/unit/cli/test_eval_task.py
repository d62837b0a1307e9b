"""`sparsescope eval-task`: bad input fails with one line naming the reason, and writes nothing."""
import pytest

from tests.factories import TINY_D_MODEL, TINY_HOOK, TINY_MODEL, saved_dictionary
from tests.helpers import error_line, run_cli

PATTERN_HOOK = "blocks.0.attn.hook_pattern"


@pytest.fixture
def eval_ws(ws):
    """Two tiny-random dictionaries: `resid` at the residual stream, `pattern` at the attention pattern."""
    from store import session
    from store.dictionaries import DictionaryRow, add_dictionary

    with session(ws.db_path) as con:
        for name, hook in (("resid", TINY_HOOK), ("pattern", PATTERN_HOOK)):
            folder = saved_dictionary(ws.dictionaries_dir / name, hook_name=hook)
            add_dictionary(con, DictionaryRow(name, TINY_MODEL, hook, "topk", TINY_D_MODEL, 128, 4, str(folder)))
    return ws


@pytest.mark.parametrize("args, reason", [
    (["nope", "--layer", "0"], "unknown task 'nope' (choose from ioi)"),
    (["ioi", "--model", TINY_MODEL, "--layer", "5"], "is on layer 5, but tiny-random has layers 0..1"),
    (["ioi", "--model", TINY_MODEL, "--layer", "-1"], "--layer must be >= 0"),
    (["ioi", "--dictionary", "pattern"], f"cannot use hook '{PATTERN_HOOK}': it holds no activation per token"),
    (["ioi", "--model", TINY_MODEL, "--hook", "hook_embed"], "it patches a site inside a block"),
    (["ioi", "--dictionary", "resid", "--layer", "1"], f"reads {TINY_HOOK}, not blocks.1.hook_resid_post"),
    (["ioi", "--dictionary", "missing"], "missing"),
    (["ioi"], "give --dictionary NAME, or --layer / --hook"),
    (["ioi", "--dictionary", "resid", "--prompts", "1"], "--prompts must be at least 2 (got 1)"),
    (["ioi", "--dictionary", "resid", "--edit-features", "0"], "--edit-features must be at least 1 (got 0)"),
    # tiny-random's byte tokenizer makes no name a single token
    (["ioi", "--dictionary", "resid"], "names that are single tokens for tiny-random: only 0 of 36 are"),
])
def test_bad_input_fails_for_the_reason_it_names(monkeypatch, capsys, eval_ws, one_thread, args, reason):
    code, _, err = run_cli(monkeypatch, capsys, "eval-task", *args, "-w", str(eval_ws.root))
    assert code == 2
    assert reason in error_line(err)
    assert list(eval_ws.root.rglob("task_evals")) == []
