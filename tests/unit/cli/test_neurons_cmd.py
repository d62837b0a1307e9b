"""`sparsescope neurons add` and `neurons find` on the tiny model: what they record and print, and bad input as one
`error:` line with exit 2 and nothing recorded."""
from __future__ import annotations

import pytest

from tests.helpers import error_line, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def _dictionaries(ws) -> list[tuple]:
    from store import session

    if not ws.db_path.exists():
        return []
    with session(ws.db_path, read_only=True) as con:
        return con.execute("SELECT name, arch, model, hook, d_in, d_sae, k FROM dictionaries").fetchall()


def test_add_records_the_neuron_dictionary_and_find_points_to_it(ws, monkeypatch, capsys):
    from app.commands.common import console

    monkeypatch.setattr(console, "width", 300)  # the console may exist already (COLUMNS is read when it is made)
    code, out, err = run_cli(monkeypatch, capsys, "neurons", "add", "--layer", "1", "--model", "tiny-random",
                             "-w", str(ws.root))
    assert code == 0, err
    assert "neurons-L1" in out and "/feature?dict=neurons-L1&feature=N" in out
    assert _dictionaries(ws) == [("neurons-L1", "neurons", "tiny-random", "blocks.1.mlp.hook_post", 256, 256, None)]
    assert (ws.named("dictionaries", "neurons-L1") / "cfg.json").is_file()

    code, out, err = run_cli(monkeypatch, capsys, "neurons", "find", "--layers", "0-1", "--concept", "a e",
                             "--model", "tiny-random", "--top", "3", "-w", str(ws.root))
    assert code == 0, err
    assert "decoded 512 neurons of 2 layer(s), both signs" in out
    assert "/feature?dict=neurons-L1&feature=" in out or "sparsescope neurons add --layer 0 --model tiny-random" in out


@pytest.mark.parametrize("args, message", [
    (["add", "--layer", "2", "--model", "tiny-random"], "layer 2 is out of range: tiny-random has layers 0..1"),
    (["add", "--layer", "0", "--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["add", "--layer", "0", "--model", "tiny-random", "--name", "../x"], "name"),
    (["find", "--layer", "2", "--concept", "a", "--model", "tiny-random"], "layer 2 is out of range"),
    (["find", "--layers", "0-5", "--concept", "a", "--model", "tiny-random"], "layer 2 is out of range"),
    (["find", "--layers", "3-1", "--concept", "a", "--model", "tiny-random"], "the first layer is after the last"),
    (["find", "--layer", "0", "--concept", "  ", "--model", "tiny-random"], "--concept needs at least one word"),
    (["find", "--layer", "0", "--concept", "dog", "--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["find", "--concept", "dog"], "give one of --layer L or --layers A-B"),
    (["find", "--layer", "0", "--layers", "0-1", "--concept", "dog"], "give one of --layer L or --layers A-B"),
])
def test_bad_input_is_one_error_line_and_nothing_recorded(ws, monkeypatch, capsys, args, message):
    code, out, err = run_cli(monkeypatch, capsys, "neurons", *args, "-w", str(ws.root))
    assert code == 2, (out, err)
    assert message in error_line(err)
    assert _dictionaries(ws) == [] and not ws.named("dictionaries", "neurons-L2").exists()


def test_a_name_taken_is_refused_before_the_model_loads(ws, monkeypatch, capsys):
    assert run_cli(monkeypatch, capsys, "neurons", "add", "--layer", "0", "--model", "tiny-random",
                   "--name", "mine", "-w", str(ws.root))[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, "neurons", "add", "--layer", "1", "--model", "no-such-model",
                           "--name", "mine", "-w", str(ws.root))
    assert code == 2 and "already exists" in error_line(err)
