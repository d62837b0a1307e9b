"""`sparsescope export-db` and `import-db` killed with SIGKILL midway, right before and right after the commit or
the final rename: the store opens, a half-written export is never taken for one, and a rerun ends where an
uninterrupted run does."""
import json
from datetime import datetime

import pyarrow.parquet as pq
import pytest

from tests.helpers import cli_process, copy_workspace, error_line, run_cli, store_rows

pytestmark = pytest.mark.slow


def _tables(db) -> list[str]:
    from store import connect
    from store.portability import user_tables

    con = connect(db, read_only=True)
    try:
        return user_tables(con)
    finally:
        con.close()


def _store(root) -> dict:
    db = root / "sparsescope.duckdb"
    return {t: store_rows(db, t, root=root) for t in _tables(db)}


def _export(folder, root) -> tuple:
    """An export's tables (rows without timestamps, the workspace `root` in paths as "WS") and other files."""
    manifest = json.loads((folder / "manifest.json").read_text())

    def plain(row: dict) -> dict:
        return {k: v.replace(str(root), "WS") if isinstance(v, str) else v for k, v in row.items()
                if not isinstance(v, datetime)}

    tables = {name: [plain(r) for r in pq.read_table(folder / entry["file"]).to_pylist()]
              for name, entry in manifest["tables"].items()}
    files = {k: v for k, v in manifest["files"].items() if not k.startswith("tables/")}
    return manifest["tables"], tables, files


@pytest.fixture(scope="module")
def reference(fault_base, tmp_path_factory):
    """The base workspace exported, and that export imported into an empty workspace, both uninterrupted."""
    from store import Workspace
    from store.portability import export_db, import_db

    tmp = tmp_path_factory.mktemp("reference")
    root = copy_workspace(fault_base, tmp / "ws")
    export_db(root / "sparsescope.duckdb", tmp / "export")
    imported = Workspace.resolve(tmp / "imported")
    import_db(imported, None, tmp / "export")
    return root, tmp / "export", imported.root


@pytest.mark.parametrize("point", ["export_db.table:2", "export_db.rename"])
def test_a_killed_export_leaves_no_export(reference, tmp_path, monkeypatch, capsys, point):
    root = copy_workspace(reference[0], tmp_path / "ws")
    before = _store(root)
    out = tmp_path / "export"
    killed = cli_process("export-db", out, "-w", root, crash_at=point)
    assert killed.returncode == -9, killed.stderr
    assert _store(root) == before and not out.exists()
    code, _, err = run_cli(monkeypatch, capsys, "import-db", str(out), "-w", str(tmp_path / "other"))
    assert code == 2 and "not a SparseScope export" in error_line(err)
    code, _, err = run_cli(monkeypatch, capsys, "export-db", str(out), "-w", str(root))
    assert code in (0, None), err
    assert _export(out, root) == _export(reference[1], reference[0])


@pytest.mark.parametrize("point", ["import_db.commit", "import_db.committed"])
def test_a_killed_import_is_all_or_nothing_and_reruns(reference, tmp_path, monkeypatch, capsys, point):
    root = tmp_path / "ws"
    killed = cli_process("import-db", reference[1], "-w", root, crash_at=point)
    assert killed.returncode == -9, killed.stderr
    stored = _store(root)  # the store opens
    if point == "import_db.commit":
        assert all(rows == [] for rows in stored.values())
        code, _, err = run_cli(monkeypatch, capsys, "import-db", str(reference[1]), "-w", str(root))
        assert code in (0, None), err
    assert _store(root) == _store(reference[2])
    for name in ("tk",):
        files = sorted(p.name for p in (root / "dictionaries" / name).iterdir())
        assert files == sorted(p.name for p in (reference[2] / "dictionaries" / name).iterdir())
        assert [(root / "dictionaries" / name / f).read_bytes() == (reference[2] / "dictionaries" / name / f)
                .read_bytes() for f in files] == [True] * len(files)
