"""store.paths: names stay inside their folder, small files are written durably, staging of killed runs is swept
(and nothing else), output targets are never silently replaced."""
from __future__ import annotations

import os

import pytest

from store import InputError, paths
from store.paths import (
    MARKER,
    check_output_file,
    check_output_folder,
    confined,
    refuse_symlinks,
    staging_dir,
    swap_folder,
    sweep_staging,
    write_durable,
)
from tests.helpers import dead_pid, killed_staging


@pytest.mark.parametrize("name", ["../x", "..", ".", "", "a/b", "/etc", ".hidden", "a\\b", "x" * 129, "a b", None])
def test_bad_names_are_refused(ws, name):
    with pytest.raises(InputError, match="name .* must start with a letter or digit"):
        ws.named("dictionaries", name)


def test_a_name_is_a_direct_child_of_its_folder(ws, tmp_path):
    assert ws.named("dictionaries", "topk-1.x") == ws.root / "dictionaries" / "topk-1.x"
    assert ws.named("reports", "topk", ".html") == ws.root / "reports" / "topk.html"
    outside = tmp_path / "outside"
    outside.mkdir()
    ws.dictionaries_dir.mkdir()
    (ws.dictionaries_dir / "link").symlink_to(outside)
    with pytest.raises(InputError, match=r"dictionary 'link' leads to .*outside.*refusing"):
        ws.named("dictionaries", "link")
    (ws.root / "activations").symlink_to(outside)  # the kind folder itself leads out of the workspace
    with pytest.raises(InputError, match="activation cache 'c' leads to"):
        ws.named("activations", "c")
    with pytest.raises(InputError, match="activation shard name '../c'"):
        confined(ws.root, "../c", "activation shard")


def test_symlinks_inside_a_folder_are_found(tmp_path):
    folder = tmp_path / "f"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.txt").write_text("a")
    refuse_symlinks(folder, "export")
    (folder / "sub" / "b.txt").symlink_to(tmp_path)
    with pytest.raises(InputError, match=r"export .* contains a symbolic link \(sub/b.txt\)"):
        refuse_symlinks(folder, "export")


def test_write_durable_fsyncs_file_and_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(paths.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    target = tmp_path / "manifest.json"
    target.write_text("old")
    write_durable(target, '{"new": 1}')
    assert target.read_text() == '{"new": 1}' and len(synced) == 2  # the file, then its folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]

    def failing(path, data):
        raise OSError("disk full")
    monkeypatch.setattr(paths.os, "replace", failing)
    with pytest.raises(OSError):
        write_durable(target, "newer")
    assert target.read_text() == '{"new": 1}' and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_sweep_removes_only_dead_staging(tmp_path):
    pid, host = dead_pid(), paths.HOST
    dead_dir = tmp_path / f".import.partial-{pid}@{host}-ab12_x"
    (dead_dir / "dictionaries").mkdir(parents=True)
    dead_file = tmp_path / f".r.html.partial-{pid}@{host}-q1w2.pdf"
    dead_file.write_text("x")
    live = tmp_path / f".import.partial-{os.getpid()}@{host}-live1"
    live.mkdir()
    keep = [tmp_path / n for n in (".import-notes", f"import.partial-{pid}@{host}-x", f".x.partial-{pid}@{host}",
                                   f".partial-{pid}@{host}-a", f".x.partial-{pid}@{host}-a-b", f".x.partial-{pid}-ab",
                                   f".x.partial-{pid}@another.host-ab")]  # the last: a PID of another machine
    for path in keep:
        path.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    link = tmp_path / f".link.partial-{pid}@{host}-zz"
    link.symlink_to(outside)
    assert sweep_staging(tmp_path, "other") == []  # another target's staging is left alone
    assert sorted(sweep_staging(tmp_path)) == sorted([dead_dir, dead_file])
    assert live.is_dir() and all(p.is_dir() for p in keep) and link.is_symlink() and outside.is_dir()


def test_staging_sweeps_its_own_leftovers_and_swap_replaces(tmp_path):
    left = killed_staging(tmp_path, "d")
    left.mkdir()
    stage = staging_dir(tmp_path, "d")
    assert not left.exists() and stage.name.startswith(f".d.partial-{os.getpid()}@{paths.HOST}-")
    (stage / "new.txt").write_text("new")
    target = tmp_path / "d"
    target.mkdir()
    (target / "old.txt").write_text("old")
    swap_folder(stage, target)
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_output_targets(tmp_path):
    existing = tmp_path / "r.md"
    existing.write_text("mine")
    with pytest.raises(InputError, match="already exists; pass --force"):
        check_output_file(existing)
    assert check_output_file(existing, force=True) == existing
    with pytest.raises(InputError, match="is a folder"):
        check_output_file(tmp_path, force=True)
    with pytest.raises(InputError, match="output folder .*/no does not exist"):
        check_output_file(tmp_path / "no" / "x.parquet")
    assert check_output_file(tmp_path / "no" / "deeper" / "x.parquet", make_parent=True)
    folder = tmp_path / "out"
    folder.mkdir()
    assert check_output_folder(folder) == folder  # empty: fine
    (folder / "notes.txt").write_text("user's")
    with pytest.raises(InputError, match="not empty; pick a new folder or pass --force"):
        check_output_folder(folder)
    with pytest.raises(InputError, match="not written by SparseScope"):
        check_output_folder(folder, force=True)
    (folder / MARKER).write_text("")
    assert check_output_folder(folder, force=True) == folder
    with pytest.raises(InputError, match="is not a folder"):
        check_output_folder(existing, force=True)

