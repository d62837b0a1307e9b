"""Paths on the command line: a hostile import, a linked SAELens folder, an output that exists or is a folder are
each one `error:` line, exit 2, nothing written; odd but honest workspace paths work."""
from __future__ import annotations

import pytest

from store import Workspace
from store.paths import MARKER
from tests.exports import CASES, hostile, make_workspace, snapshot, table_rows
from tests.helpers import error_line, run_cli


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("cli-outputs") / "src")


@pytest.fixture(scope="module")
def exported(source, tmp_path_factory):
    from store import session
    from store.portability import export_db

    folder = tmp_path_factory.mktemp("cli-export") / "export"
    with session(source.db_path, read_only=True) as con:
        export_db(con, folder, with_activations=True)
    return folder


def _fails(monkeypatch, capsys, needle: str, *args: str) -> None:
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and needle in error_line(err), err


@pytest.mark.parametrize("case", ["dictionary name in the manifest", "dictionary row", "symlinked dictionary folder",
                                  "checksum list names ../x", "shard name with ../", "table outside the schema"])
def test_import_db_of_a_hostile_export(monkeypatch, capsys, exported, tmp_path, case):
    edit, needle = CASES[case]
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "secret.txt").write_text("secret")
    evil = hostile(exported, tmp_path, edit)
    before = snapshot(tmp_path)
    _fails(monkeypatch, capsys, needle, "import-db", str(evil), "-w", str(tmp_path / "ws"))
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("ws")} == before
    # the export is refused before the store is even opened: at most an empty store, nothing else
    assert set(p.name for p in (tmp_path / "ws").iterdir()) <= {"sparsescope.duckdb"}


def test_import_of_a_saelens_folder_with_a_link(monkeypatch, capsys, tmp_path):
    from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig

    folder = tmp_path / "plain"
    StandardSAE(StandardSAEConfig(d_in=16, d_sae=32)).save_model(folder)
    (tmp_path / "secret.txt").write_text("secret")
    (folder / "notes.txt").symlink_to(tmp_path / "secret.txt")
    _fails(monkeypatch, capsys, "SAELens folder", "import", str(folder), "-w", str(tmp_path / "ws"))
    assert not (tmp_path / "ws" / "dictionaries").exists()
    _fails(monkeypatch, capsys, "dictionary name '../evil' must start", "import", str(folder), "--name", "../evil",
           "-w", str(tmp_path / "ws"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "secret.txt", "ws"]
    assert sorted(p.name for p in (tmp_path / "ws").iterdir()) == ["sparsescope.duckdb"]


@pytest.mark.parametrize("args, needle", [
    (["report", "topk-demo", "--top", "2", "--out", "{tmp}/taken.html"], "taken.html already exists; pass --force"),
    (["report", "../../escape", "--top", "2"], "dictionary name '../../escape' must start"),
    (["heads-export", "{tmp}/folder"], "is a folder; give a file name"),
    (["heads-export", "{tmp}/folder", "--force"], "is a folder; give a file name"),
    (["heads-export", "{tmp}/taken.html"], "taken.html already exists; pass --force"),
    (["export-db", "{tmp}/folder", "--force"], "folder exists and was not written by SparseScope"),
    (["export-db", "{tmp}/folder"], "folder exists and is not empty"),
    (["export-neuronpedia", "attn-demo", "--out", "{tmp}/folder", "--force"], "not written by SparseScope"),
])
def test_outputs_are_never_silently_replaced(monkeypatch, capsys, source, tmp_path, args, needle):
    (tmp_path / "taken.html").write_text("mine")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "thesis.md").write_text("years of work")
    before, store_before = snapshot(tmp_path), snapshot(source.root)
    _fails(monkeypatch, capsys, needle, *[a.replace("{tmp}", str(tmp_path)) for a in args], "-w", str(source.root))
    assert snapshot(tmp_path) == before
    assert {k: v for k, v in snapshot(source.root).items() if "duckdb" not in k} == \
        {k: v for k, v in store_before.items() if "duckdb" not in k}


def test_force_replaces_what_sparsescope_wrote(monkeypatch, capsys, source, tmp_path):
    out = str(tmp_path / "r.json")
    args = ("report", "topk-demo", "--top", "2", "--format", "json", "--out", out, "-w", str(source.root))
    assert run_cli(monkeypatch, capsys, *args)[0] in (0, None)
    assert run_cli(monkeypatch, capsys, *args, "--force")[0] in (0, None)
    heads = str(tmp_path / "h.parquet")
    assert run_cli(monkeypatch, capsys, "heads-export", heads, "-w", str(source.root))[0] in (0, None)
    assert run_cli(monkeypatch, capsys, "heads-export", heads, "--force", "-w", str(source.root))[0] in (0, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.parquet", "r.json"]


def test_round_trip_through_a_workspace_path_with_spaces_quotes_and_percent(monkeypatch, capsys, source, tmp_path):
    odd = tmp_path / "it's a \"100%\" workspace"
    export = odd / "my 'export' 50%"
    odd.mkdir()
    code, out, err = run_cli(monkeypatch, capsys, "export-db", str(export), "--with-activations",
                             "-w", str(source.root))
    assert code in (0, None) and "checksummed files" in out, err
    assert (export / MARKER).is_file()
    target = odd / "new ws %d 'x'"
    code, out, err = run_cli(monkeypatch, capsys, "import-db", str(export), "-w", str(target))
    assert code in (0, None) and "4 dictionary folder(s)" in out, err
    assert table_rows(Workspace.resolve(target)) == table_rows(source)
    assert (target / "dictionaries" / "topk-demo" / "cfg.json").is_file()
    code, out, err = run_cli(monkeypatch, capsys, "export-db", str(export), "--force", "-w", str(target))
    assert code in (0, None), err
