"""Report outputs are never silently replaced: an existing file needs --force, and --force replaces a figures
or export folder only when SparseScope wrote it."""
from __future__ import annotations

import pytest

import analysis.reports as reports
from analysis.reports import Selection, collect_report, write_report
from analysis.reports.neuronpedia import export_neuronpedia
from store import InputError, connect
from store.paths import MARKER
from tests.factories import build_report_store
from tests.helpers import killed_staging


@pytest.fixture(scope="module")
def store():
    con = connect(":memory:")
    build_report_store(con, n_features=24)
    yield con
    con.close()


@pytest.fixture
def figures(monkeypatch):
    """Markdown with figures, without Chromium: the PNGs are a few bytes each."""
    monkeypatch.setattr(reports, "find_browser", lambda: "/usr/bin/chromium")
    monkeypatch.setattr(reports, "figures_to_png", lambda figs: [p.write_bytes(b"png") for p in figs])


def test_an_existing_report_file_needs_force(store, tmp_path):
    report = collect_report(store, "topk-demo", Selection(features=(1, 2)))
    out = tmp_path / "r.html"
    out.write_text("my own page")
    with pytest.raises(InputError, match=r"output file .*r.html already exists; pass --force to replace it"):
        write_report(report, "html", out)
    assert out.read_text() == "my own page"
    write_report(report, "html", out, force=True)
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


def test_markdown_figures_folder_is_replaced_only_when_ours(store, tmp_path, figures):
    report = collect_report(store, "topk-demo", Selection(features=(1, 2)))
    out = tmp_path / "r.md"
    md, *pngs = write_report(report, "md", out)
    assert pngs and all(p.parent == tmp_path / "r_files" for p in pngs) and MARKER not in {p.name for p in pngs}
    assert (tmp_path / "r_files" / MARKER).is_file()
    with pytest.raises(InputError, match="already exists; pass --force"):
        write_report(report, "md", out)
    (tmp_path / "r_files" / "stale.png").write_bytes(b"old")
    write_report(report, "md", out, force=True)  # our folder: replaced whole
    assert not (tmp_path / "r_files" / "stale.png").exists()

    theirs = tmp_path / "theirs_files"  # a folder the user made, named like the figures of theirs.md
    theirs.mkdir()
    (theirs / "holiday.png").write_bytes(b"memories")
    with pytest.raises(InputError, match="theirs_files exists and is not empty"):
        write_report(report, "md", tmp_path / "theirs.md")
    with pytest.raises(InputError, match="theirs_files exists and was not written by SparseScope"):
        write_report(report, "md", tmp_path / "theirs.md", force=True)
    assert [p.name for p in theirs.iterdir()] == ["holiday.png"] and not (tmp_path / "theirs.md").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.md", "r_files", "theirs_files"]


def test_a_killed_writers_temporary_file_goes_on_the_next_write(store, tmp_path):
    left = killed_staging(tmp_path, "r.json")
    left.write_text("{half")
    other = killed_staging(tmp_path, "notes.txt")  # another target's: left to its own next write
    other.write_text("x")
    write_report(collect_report(store, "topk-demo", Selection(features=(1,))), "json", tmp_path / "r.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "r.json"]


def test_neuronpedia_export_force_replaces_only_its_own_folder(store, tmp_path):
    out, _ = export_neuronpedia(store, "attn-demo", tmp_path / "np", batch_size=8)
    assert (out / MARKER).is_file()
    with pytest.raises(InputError, match="not empty; pick a new folder or pass --force"):
        export_neuronpedia(store, "attn-demo", out, batch_size=8)
    export_neuronpedia(store, "attn-demo", out, batch_size=64, force=True)
    assert sorted(p.name for p in out.glob("batch-*.json")) == ["batch-0.json"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="not written by SparseScope"):
        export_neuronpedia(store, "attn-demo", mine, force=True)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]

