"""import-db of a hostile export: every name that would become a path, every link, every unknown table is
refused with one line before anything is written, and nothing outside the workspace changes."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from store import InputError, Workspace, portability, session
from store.paths import MARKER
from store.portability import export_db, import_db, user_tables
from tests.exports import CASES, hostile, make_workspace, snapshot
from tests.helpers import killed_staging


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("guard")
    source = make_workspace(root / "src")
    with session(source.db_path) as con:
        export_db(con, root / "export", with_activations=True)
    return root / "export"


def _empty(space: Workspace) -> bool:
    with session(space.db_path, read_only=True) as con:
        return all(con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] == 0 for t in user_tables(con))


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_export_is_refused_and_nothing_outside_changes(exported, tmp_path, case):
    edit, needle = CASES[case]
    victim = tmp_path / "victim"
    (victim / "Documents").mkdir(parents=True)
    (victim / "secret.txt").write_text("secret")
    (victim / "Documents" / "thesis.md").write_text("years of work")
    evil = hostile(exported, tmp_path, edit)
    space = Workspace.resolve(tmp_path / "ws")  # WORKSPACE/dictionaries/../../victim is the victim folder
    before = snapshot(victim), snapshot(evil)
    with session(space.db_path) as con, pytest.raises(InputError) as info:
        import_db(space, con, evil)
    message = str(info.value)
    assert needle in message and "\n" not in message, message
    assert (snapshot(victim), snapshot(evil)) == before
    assert sorted(p.name for p in space.root.iterdir()) == ["sparsescope.duckdb"] and _empty(space)


def test_failed_import_removes_its_staging_and_a_killed_ones_go_next_time(exported, tmp_path, monkeypatch):
    space = Workspace.resolve(tmp_path / "ws")
    killed = killed_staging(space.root, "import")
    (killed / "dictionaries" / "topk-demo").mkdir(parents=True)
    mine = space.root / ".import-notes"  # not the project's staging pattern: never touched
    mine.mkdir()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(portability, "_restore_tables", broken)
    with session(space.db_path) as con, pytest.raises(RuntimeError):
        import_db(space, con, exported)
    assert sorted(p.name for p in space.root.iterdir()) == [".import-notes", "sparsescope.duckdb"]
    monkeypatch.undo()
    killed.mkdir()
    with session(space.db_path) as con:
        import_db(space, con, exported)
    assert not killed.exists() and mine.is_dir()
    assert sorted(p.name for p in space.dictionaries_dir.iterdir()) == ["attn-demo", "codebook-demo", "mp-demo",
                                                                        "topk-demo"]


def test_import_replaces_a_dictionary_folder_only_inside_the_workspace(exported, tmp_path):
    space = Workspace.resolve(tmp_path / "ws")
    stale = space.dictionaries_dir / "topk-demo"
    stale.mkdir(parents=True)
    (stale / "old.txt").write_text("old")
    with session(space.db_path) as con:
        import_db(space, con, exported)
    assert sorted(p.name for p in stale.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    shutil.rmtree(stale)
    stale.symlink_to(outside)  # a link planted in the workspace is not followed, nor replaced
    with session(space.db_path) as con, pytest.raises(InputError, match="dictionary 'topk-demo' leads to"):
        import_db(space, con, exported, replace=True)
    assert snapshot(outside) == {"keep.txt": hashlib.sha256(b"keep").hexdigest()}


def test_export_writes_its_manifest_durably_and_replaces_only_its_own_folder(exported, tmp_path, monkeypatch):
    from store import paths

    source = make_workspace(tmp_path / "src")
    synced = []
    real = os.fsync
    monkeypatch.setattr(paths.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    with session(source.db_path, read_only=True) as con:
        export_db(con, tmp_path / "out")
        assert len(synced) >= 3  # manifest file, the staging folder, the folder the export was renamed into
        (tmp_path / "out" / "note.txt").write_text("mine")
        with pytest.raises(InputError, match="exists and is not empty; pick a new folder or pass --force"):
            export_db(con, tmp_path / "out")
        export_db(con, tmp_path / "out", force=True)  # it carries the marker: replaced
        assert not (tmp_path / "out" / "note.txt").exists() and (tmp_path / "out" / MARKER).is_file()
        theirs = tmp_path / "theirs"
        theirs.mkdir()
        (theirs / "thesis.md").write_text("years of work")
        with pytest.raises(InputError, match="not written by SparseScope"):
            export_db(con, theirs, force=True)
    assert (theirs / "thesis.md").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src", "theirs"]
