"""The CLI's contract: one `error:` line on stderr, exit 2 for bad input, nothing written."""
import json

import pytest

from tests.helpers import error_line, run_cli


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("A sentence about SparseScope features. " * 200)
    return path


def test_corpus_add_and_activations_happy_path(monkeypatch, capsys, tmp_path, text_file):
    ws = str(tmp_path / "ws")
    code, out, _ = run_cli(monkeypatch, capsys, "corpus", "add", "t", "--source", str(text_file), "--model",
                           "tiny-random", "--ctx", "32", "-w", ws)
    assert code in (0, None) and "contexts" in out
    code, out, _ = run_cli(monkeypatch, capsys, "activations", "--model", "tiny-random", "--hook",
                           "blocks.1.hook_resid_post", "--corpus", "t", "--tokens", "320", "-w", ws)
    assert code in (0, None) and "wrote 320 tokens" in out
    code, out, _ = run_cli(monkeypatch, capsys, "activations", "--model", "tiny-random", "--hook",
                           "blocks.1.hook_resid_post", "--corpus", "t", "--tokens", "320", "-w", ws)
    assert "reused" in out


@pytest.mark.parametrize("args, needle", [
    (["activations", "--model", "no-such-model", "--hook", "blocks.0.hook_resid_post"], "unknown model"),
    (["activations", "--model", "tiny-random", "--hook", "blocks.0.hook_bogus"], "unknown hook"),
    (["activations", "--model", "tiny-random", "--hook", "blocks.9.hook_resid_post"], "layers 0..1"),
    (["activations", "--model", "tiny-random", "--hook", "blocks.0.hook_resid_post", "--tokens", "0"],
     "positive"),
    (["corpus", "add", "c", "--source", "/no/such/file.txt", "--model", "tiny-random"], "existing path"),
])
def test_bad_input_is_one_line_and_writes_nothing(monkeypatch, capsys, tmp_path, args, needle):
    ws = tmp_path / "ws"
    code, _, err = run_cli(monkeypatch, capsys, *args, "-w", str(ws))
    assert code == 2
    assert needle in error_line(err)
    assert not (ws / "activations").exists()
    if (ws / "sparsescope.duckdb").exists():
        import duckdb

        con = duckdb.connect(str(ws / "sparsescope.duckdb"), read_only=True)
        assert con.execute("SELECT count(*) FROM corpora").fetchone()[0] == 0
        con.close()


@pytest.mark.parametrize("content, needle", [(b"", "fewer tokens"), (b"\xff\xfe\x00bad", "not UTF-8")])
def test_bad_corpus_files(monkeypatch, capsys, tmp_path, content, needle):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    code, _, err = run_cli(monkeypatch, capsys, "corpus", "add", "c", "--source", str(path), "--model",
                           "tiny-random", "-w", str(tmp_path / "ws"))
    assert code == 2 and needle in error_line(err)


def test_workspace_that_is_a_file(monkeypatch, capsys, tmp_path, text_file):
    code, _, err = run_cli(monkeypatch, capsys, "corpus", "list", "-w", str(text_file))
    assert code == 2 and "is a file" in error_line(err)


def test_workspace_from_environment(monkeypatch, capsys, tmp_path, text_file):
    monkeypatch.setenv("SPARSESCOPE_WORKSPACE", str(tmp_path / "envws"))
    code, _, _ = run_cli(monkeypatch, capsys, "corpus", "add", "t", "--source", str(text_file), "--model",
                         "tiny-random", "--ctx", "32")
    assert code in (0, None)
    assert (tmp_path / "envws" / "sparsescope.duckdb").exists()


def test_corrupted_manifest_is_reported(monkeypatch, capsys, tmp_path, text_file):
    ws = str(tmp_path / "ws")
    run_cli(monkeypatch, capsys, "corpus", "add", "t", "--source", str(text_file), "--model", "tiny-random",
            "--ctx", "32", "-w", ws)
    args = ["activations", "--model", "tiny-random", "--hook", "blocks.1.hook_resid_post", "--corpus", "t",
            "--tokens", "64", "-w", ws]
    run_cli(monkeypatch, capsys, *args)
    manifest = next((tmp_path / "ws" / "activations").glob("*/manifest.json"))
    manifest.write_text(json.dumps({"broken": True}))
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and "corrupted" in error_line(err)


def test_a_relative_workspace_is_made_absolute(monkeypatch, tmp_path):
    """Stored dictionary and cache paths must stay valid when a command or the UI runs from another folder."""
    from store import Workspace

    monkeypatch.chdir(tmp_path)
    ws = Workspace.resolve("rel-ws")
    assert ws.root.is_absolute() and ws.root == tmp_path / "rel-ws"
    assert ws.dictionaries_dir.is_absolute()


@pytest.mark.parametrize("args", [
    ["analyze", "topk-x"], ["codes", "codebook-x", "the"], ["report", "topk-x"],
    ["export-neuronpedia", "topk-x", "--out", "{tmp}/np"], ["export-db", "{tmp}/export"],
    ["heads-export", "{tmp}/heads.parquet"], ["import-report", "{tmp}/labels.json"],
    ["steer", "--feature", "topk-x:1", "--prompt", "hi"], ["steer", "--list"],
])
def test_reading_a_workspace_that_does_not_exist_creates_nothing(monkeypatch, capsys, tmp_path, args):
    ws = tmp_path / "never-made"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, _, err = run_cli(monkeypatch, capsys, *args, "-w", str(ws))
    assert code == 2 and "no store in" in error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no workspace, no store, no output


def test_listing_dictionaries_of_a_workspace_that_does_not_exist(monkeypatch, capsys, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, "dicts", "-w", str(tmp_path / "never-made"))
    assert code in (0, None) and "no dictionaries yet" in out
    assert not (tmp_path / "never-made").exists()
