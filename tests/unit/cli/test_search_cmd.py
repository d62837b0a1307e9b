"""`sparsescope search-text`: one table per dictionary grouped by hook, user text never read as markup, and every bad
input one `error:` line with exit 2."""
import pytest

from analysis.features.search_text import search_workspace
from store import session
from store.queries import set_label
from tests.factories import SEARCH_ANALYSED, SEARCH_DICTIONARIES
from tests.helpers import error_line, run_cli

TEXT = "The cat sat on the [bold]mat[/bold]."
MARKUP_LABEL = "[red]pets[/red] :smile: [link=http://x]y[/link]"


def test_every_dictionary_is_listed_under_its_hook_with_labels(monkeypatch, capsys, search_ws):
    expected = search_workspace(search_ws, TEXT, top=3)
    top_feature = next(g for g in expected.groups if g.dictionary == SEARCH_ANALYSED).hits[0].feature
    with session(search_ws.db_path) as con:
        set_label(con, SEARCH_ANALYSED, top_feature, MARKUP_LABEL)
    from app.commands.common import console

    monkeypatch.setattr(console, "width", 250)  # the console may exist already (COLUMNS is read when it is made)
    code, out, err = run_cli(monkeypatch, capsys, "search-text", TEXT, "--top", "3", "-w", str(search_ws.root))
    assert code in (0, None) and not err, err
    lines = out.splitlines()
    hooks = [line.removeprefix("hook ") for line in lines if line.startswith("hook ")]
    assert hooks == list(expected.by_hook())
    titles = [i for i, line in enumerate(lines) if " \u00b7 " in line]
    assert [lines[i].split(" ")[0] for i in titles] == [g.dictionary for g in expected.groups]
    assert sorted(g.dictionary for g in expected.groups) == sorted(d[0] for d in SEARCH_DICTIONARIES)
    assert MARKUP_LABEL in out  # printed as typed: neither styled nor dropped
    for group, start, end in zip(expected.groups, titles, titles[1:] + [len(lines)]):
        assert lines[start].startswith(f"{group.dictionary} \u00b7 {group.hook}")
        rows = [line for line in lines[start:end] if line.startswith("\u2502")]
        assert [int(row.split("\u2502")[1]) for row in rows] == [h.feature for h in group.hits]
        for hit, row in zip(group.hits, rows):
            assert f"{hit.max_act:.4g}" in row
            strongest = max(hit.firings, key=lambda f: f.activation)
            assert f"{strongest.token!r}@{strongest.position}" in row
            if group.analysed and hit.feature != top_feature:
                assert f"feature {hit.feature}" in row and "%" in row
    assert "(not analysed)" in out


def test_named_dictionaries_only(monkeypatch, capsys, search_ws):
    code, out, _ = run_cli(monkeypatch, capsys, "search-text", TEXT, "--dictionaries", "res1-relu, z0-topk",
                           "-w", str(search_ws.root))
    assert code in (0, None)
    assert "res1-relu" in out and "z0-topk" in out and "res0-topk" not in out


def test_a_text_longer_than_the_context_is_cut_with_a_note(monkeypatch, capsys, search_ws):
    code, _, err = run_cli(monkeypatch, capsys, "search-text", "ab" * 200, "--dictionaries", SEARCH_ANALYSED,
                           "-w", str(search_ws.root))
    assert code in (0, None)
    assert err.strip() == "note: the text is longer than tiny-random's context: only its first 256 tokens were read"


@pytest.mark.parametrize("args, message", [
    (("  ",), "error: the text is empty: type some text"),
    (("x" * 4001,), "error: the text has 4,001 characters; at most 4,000 are read"),
    (("hi", "--model", "gpt2"), "error: no dictionaries for model 'gpt2' in this workspace (models with "
                                "dictionaries: tiny-random)"),
    (("hi", "--dictionaries", "res0-topk,nope"), "error: unknown dictionary 'nope' (dictionaries of tiny-random: "
                                                 "res0-codebook, res0-mp, res0-topk, res1-relu, z0-topk)"),
    (("hi", "--top", "0"), "error: top must be between 1 and 1000 features per dictionary (got 0)"),
])
def test_bad_input_is_one_error_line(monkeypatch, capsys, search_ws, args, message):
    code, out, err = run_cli(monkeypatch, capsys, "search-text", *args, "-w", str(search_ws.root))
    assert code == 2 and not out
    assert error_line(err) == message


def test_a_workspace_without_dictionaries(monkeypatch, capsys, tmp_path):
    from store import Workspace

    space = Workspace.resolve(tmp_path / "empty")
    with session(space.db_path):  # a store with no dictionary
        pass
    code, _, err = run_cli(monkeypatch, capsys, "search-text", "hi", "-w", str(space.root))
    assert code == 2 and error_line(err).startswith("error: no dictionary in this workspace has a known model")
    code, _, err = run_cli(monkeypatch, capsys, "search-text", "hi", "-w", str(tmp_path / "none"))
    assert code == 2 and error_line(err).startswith("error: no store in")
