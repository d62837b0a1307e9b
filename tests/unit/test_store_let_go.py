"""Long jobs let go of the store while they compute or copy: another process can write meanwhile
(activations while the model runs, import while it copies a dictionary, export-db and import-db while they copy
folders)."""
import shutil
import subprocess
import sys

import pytest

import analysis.activations
from analysis.corpora import add_corpus
from store import Workspace, session
from tests.factories import saved_dictionary
from tests.helpers import run_cli

PROBE = "import duckdb, sys\nduckdb.connect(sys.argv[1]).close()\n"


def _free(db) -> bool:
    """Whether another process can open the store for writing now."""
    return subprocess.run([sys.executable, "-c", PROBE, str(db)], capture_output=True, timeout=60).returncode == 0


@pytest.fixture
def copies(monkeypatch):
    """Every shutil.copytree call records whether the store at `copies.db` was free when it began."""
    original, seen = shutil.copytree, []

    def copytree(src, dst, *args, **kwargs):
        seen.append(_free(copies.db))
        return original(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copytree", copytree)
    copies.seen = seen
    return copies


def test_activations_let_go_while_the_model_runs(tiny_model, ws, tmp_path, monkeypatch):
    src = tmp_path / "t.txt"
    src.write_text("".join(f"Line {i} of the corpus.\n" for i in range(300)))
    with session(ws.db_path) as con:
        add_corpus(con, "t", str(src), "tiny-random", ctx=16)
    original, seen = analysis.activations.write_caches, []

    def write_caches(*args, **kwargs):
        seen.append(_free(ws.db_path))
        return original(*args, **kwargs)

    monkeypatch.setattr(analysis.activations, "write_caches", write_caches)
    result = analysis.activations.build_cache(ws, None, tiny_model, "blocks.0.hook_resid_post", "t", 320,
                                              progress=False)
    assert seen == [True] and result.manifest.complete


def test_import_lets_go_while_it_copies(copies, monkeypatch, capsys, tmp_path):
    ws = Workspace.resolve(tmp_path / "ws")
    copies.db = ws.db_path
    folder = saved_dictionary(tmp_path / "d", d_sae=32)
    code, _, err = run_cli(monkeypatch, capsys, "import", str(folder), "-w", str(ws.root))
    assert code in (0, None), err
    assert copies.seen == [True]


def test_export_and_import_db_let_go_while_they_copy(copies, monkeypatch, capsys, tmp_path):
    ws = Workspace.resolve(tmp_path / "ws")
    folder = saved_dictionary(tmp_path / "d", d_sae=32)
    copies.db = ws.db_path
    run_cli(monkeypatch, capsys, "import", str(folder), "-w", str(ws.root))
    code, _, err = run_cli(monkeypatch, capsys, "export-db", str(tmp_path / "out"), "-w", str(ws.root))
    assert code in (0, None), err
    other = Workspace.resolve(tmp_path / "other")
    copies.db = other.db_path
    code, _, err = run_cli(monkeypatch, capsys, "import-db", str(tmp_path / "out"), "-w", str(other.root))
    assert code in (0, None), err
    assert copies.seen == [True, True, True]  # import, export (one dictionary), import-db (one dictionary)


def test_corpus_add_lets_go_while_it_tokenises(monkeypatch, capsys, tmp_path):
    import analysis.corpora

    ws = Workspace.resolve(tmp_path / "ws")
    src = tmp_path / "t.txt"
    src.write_text("".join(f"Line {i} of the corpus.\n" for i in range(300)))
    original, seen = analysis.corpora.tokenize_source, []

    def tokenize_source(*args, **kwargs):
        seen.append(_free(ws.db_path))
        return original(*args, **kwargs)

    monkeypatch.setattr(analysis.corpora, "tokenize_source", tokenize_source)
    code, _, err = run_cli(monkeypatch, capsys, "corpus", "add", "t", "--source", str(src), "--model",
                           "tiny-random", "--ctx", "16", "-w", str(ws.root))
    assert code in (0, None), err
    assert seen == [True] and ws.db_path.exists()
    with session(ws.db_path) as con:
        assert con.execute("SELECT n_contexts FROM corpora WHERE name = 't'").fetchone()[0] > 0
