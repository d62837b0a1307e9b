"""Move a whole workspace between machines: every table as Parquet, dictionary folders, SHA-256 checksums.

Layout of an export folder DIR:
    DIR/manifest.json            what is inside, the schema version, and the SHA-256 of every other file
    DIR/tables/NAME.parquet      one file per table (DuckDB COPY ... (FORMAT parquet))
    DIR/dictionaries/NAME/       each dictionary's folder (SAELens cfg.json + safetensors)
    DIR/activations/NAME/        activation caches, only with with_activations=True (they can be large)

Import verifies every checksum before it writes anything, restores the tables in one transaction (referenced
tables first), copies the folders and rewrites the stored paths to the new workspace. Labels can also travel
alone (`import_labels`, used by report import).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from store.db import borrow, transaction
from store.errors import InputError
from store.faults import crash_point
from store.paths import (
    check_output_folder,
    confined,
    mark_output,
    refuse_symlinks,
    staging_dir,
    swap_folder,
    sweep_staging,
    write_durable,
)
from store.workspace import KINDS, Workspace

FORMAT = "sparsescope-workspace"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sql_string_literal(text: str) -> str:
    """A SQL string literal for `text`: control characters refused, quotes doubled (SQL standard escaping)."""
    if any(ord(ch) < 32 for ch in text):
        raise InputError(f"path {text!r} contains control characters")
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def user_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every table of the store except `_migrations`, referenced tables before the tables referencing them."""
    rows = con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' AND NOT internal "
                       "AND NOT temporary AND table_name <> '_migrations' ORDER BY table_oid").fetchall()
    names = [r[0] for r in rows]
    refs = {n: set() for n in names}
    for table, referenced in con.execute("SELECT table_name, referenced_table FROM duckdb_constraints() "
                                         "WHERE constraint_type = 'FOREIGN KEY'").fetchall():
        if table in refs and referenced in refs and referenced != table:
            refs[table].add(referenced)
    ordered: list[str] = []
    while len(ordered) < len(names):  # creation order, delayed until what a table references is placed
        ready = [n for n in names if n not in ordered and refs[n] <= set(ordered)]
        ordered.append(ready[0] if ready else next(n for n in names if n not in ordered))
    return ordered


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """Newest migration applied to this store (read-only safe, unlike migrations.current_version)."""
    return int(con.execute("SELECT coalesce(max(id), 0) FROM _migrations").fetchone()[0])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _binds_copy_path(con: duckdb.DuckDBPyConnection, probe: Path) -> bool:
    """Whether this DuckDB binds COPY's target path as a parameter (probed outside any transaction)."""
    try:
        con.execute("COPY (SELECT 1 AS x) TO ? (FORMAT parquet)", [str(probe)])
    except (duckdb.ParserException, duckdb.BinderException, duckdb.InvalidInputException):
        return False
    probe.unlink(missing_ok=True)
    return True


def _copy_to(con: duckdb.DuckDBPyConnection, table: str, path: Path, bind: bool) -> None:
    if bind:
        con.execute(f"COPY {_ident(table)} TO ? (FORMAT parquet)", [str(path)])
    else:  # older DuckDB: a literal quoted by the standard escaper, never pasted raw
        con.execute(f"COPY {_ident(table)} TO {sql_string_literal(str(path))} (FORMAT parquet)")


def _folders(con: duckdb.DuckDBPyConnection, table: str, key: str, with_them: bool) -> dict[str, Path]:
    if not with_them or table not in user_tables(con):
        return {}
    rows = con.execute(f"SELECT {key}, path FROM {_ident(table)} ORDER BY {key}").fetchall()
    return {name: Path(path) for name, path in rows if path and Path(path).is_dir()}


def export_db(con: duckdb.DuckDBPyConnection | str | Path, out: str | Path, with_activations: bool = False,
              force: bool = False) -> dict:
    """Write the store and its dictionaries to the new folder `out`; returns the manifest.

    `con`: an open connection, or the store's path: then the store is opened (read-only) only while the tables
    are copied, not while folders are copied and hashed. Everything is written to a temporary folder beside
    `out` and renamed at the end, so a failure leaves no half-written export behind. `force` replaces an earlier
    export (a folder carrying store.paths.MARKER), never a folder SparseScope did not write.
    """
    out = check_output_folder(out, force)
    stage = staging_dir(out.parent, out.name)
    try:
        manifest = _write_export(con, stage, with_activations)
        mark_output(stage)
        crash_point("export_db.rename")
        swap_folder(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return manifest


def _write_export(store, stage: Path, with_activations: bool) -> dict:
    (stage / "tables").mkdir()
    tables, sources = {}, {}
    with borrow(store, read_only=True) as con:
        bind = _binds_copy_path(con, stage / "probe.parquet")
        with transaction(con, "export_db"):  # one snapshot: a job committing meanwhile cannot split the export
            for table in user_tables(con):
                _copy_to(con, table, stage / "tables" / f"{table}.parquet", bind)
                rows = con.execute(f"SELECT count(*) FROM {_ident(table)}").fetchone()[0]
                tables[table] = {"file": f"tables/{table}.parquet", "rows": int(rows)}
                crash_point("export_db.table")
            for kind, table, key, wanted in (("dictionaries", "dictionaries", "name", True),
                                             ("activations", "activation_caches", "name", with_activations)):
                sources[kind] = _folders(con, table, key, wanted)
            version = schema_version(con)
    folders = {}
    for kind, found in sources.items():  # the store is closed again: copies of large folders take long
        folders[kind] = {}
        for name, src in found.items():
            shutil.copytree(src, confined(stage / kind, name, KINDS[kind]))
            folders[kind][name] = {"folder": f"{kind}/{name}", "original_path": str(src)}
    files = {p.relative_to(stage).as_posix(): sha256_file(p) for p in sorted(stage.rglob("*")) if p.is_file()}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "schema_version": version,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "tables": tables,
                **folders, "files": files}
    write_durable(stage / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def _inside(root: Path, rel: str) -> Path:
    path = (root / rel).resolve()
    if Path(rel).is_absolute() or ".." in Path(rel).parts or root.resolve() not in path.parents:
        raise InputError(f"manifest names a file outside the export folder: {rel!r}")
    return path


def _read_manifest(src: Path) -> dict:
    try:
        manifest = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{src} is not a SparseScope export: no {MANIFEST}") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {src / MANIFEST}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or manifest.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{src / MANIFEST} is not a {FORMAT} export of version {FORMAT_VERSION}")
    shapes = {"files": str, "tables": dict, "dictionaries": dict, "activations": dict}
    for key, kind in shapes.items():
        entries = manifest.setdefault(key, {})
        if not isinstance(entries, dict) or not all(isinstance(k, str) and isinstance(v, kind)
                                                    for k, v in entries.items()):
            raise InputError(f"{src / MANIFEST} is malformed: {key!r} is not a table of names")
    if not isinstance(manifest.get("schema_version"), int):
        raise InputError(f"{src / MANIFEST} is malformed: no schema_version")
    return manifest


def verify_export(src: str | Path) -> dict:
    """Read the manifest of an export folder and check every file's SHA-256; InputError on any mismatch.

    An export holding a symbolic link is refused (a link could lead the import outside the export)."""
    src = Path(src).expanduser()
    if src.is_dir():
        refuse_symlinks(src, "export")
    manifest = _read_manifest(src)
    bad = []
    for rel, digest in manifest["files"].items():
        path = _inside(src, rel)
        if not path.is_file():
            bad.append(f"{rel} (missing)")
        elif sha256_file(path) != digest:
            bad.append(f"{rel} (checksum mismatch)")
    listed = set(manifest["files"])
    for entry in manifest["tables"].values():
        if entry.get("file") not in listed:
            bad.append(f"{entry.get('file')} (not covered by a checksum)")
    if bad:
        raise InputError(f"export {src} failed verification, nothing imported: " + ", ".join(bad[:10])
                         + (f" and {len(bad) - 10} more" if len(bad) > 10 else ""))
    return manifest


@dataclass
class ImportSummary:
    rows: dict[str, int] = field(default_factory=dict)
    """Rows restored per table."""
    dictionaries: list[str] = field(default_factory=list)
    """Dictionary folders copied into the workspace."""
    caches_without_files: list[str] = field(default_factory=list)
    """Activation caches whose files were not exported: kept as rows, marked incomplete."""


def store_is_empty(con: duckdb.DuckDBPyConnection) -> bool:
    return all(con.execute(f"SELECT count(*) FROM {_ident(t)}").fetchone()[0] == 0 for t in user_tables(con))


def _check_names(ws: Workspace, con: duckdb.DuckDBPyConnection, src: Path, manifest: dict) -> None:
    """Every name the import turns into a path (manifest entries, dictionary and cache rows) and every table
    name, checked before anything is written."""
    unknown = sorted(set(manifest["tables"]) - set(user_tables(con)))
    if unknown:
        raise InputError(f"the export names table(s) this SparseScope's schema lacks: {', '.join(unknown[:5])}")
    for kind in ("dictionaries", "activations"):
        for name, entry in manifest[kind].items():
            ws.named(kind, name)
            if entry.get("folder") != f"{kind}/{name}":
                raise InputError(f"manifest entry {kind}/{name} points at {entry.get('folder')!r}, "
                                 f"expected {kind}/{name!r}")
    for name in manifest["activations"]:
        _check_shard_names(src / "activations" / name)
    for table, kind in (("dictionaries", "dictionaries"), ("activation_caches", "activations")):
        if table in manifest["tables"]:
            path = _inside(src, manifest["tables"][table].get("file", ""))
            try:
                names = con.execute("SELECT name FROM read_parquet(?)", [str(path)]).fetchall()
            except duckdb.Error as exc:
                raise InputError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
            for (name,) in names:
                ws.named(kind, name)


def _check_shard_names(folder: Path) -> None:
    """The shard files an exported activation cache's manifest names must lie inside the cache folder."""
    path = folder / "manifest.json"
    if not path.is_file():
        return
    try:
        shards = json.loads(path.read_text(encoding="utf-8")).get("shards") or []
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    for shard in shards if isinstance(shards, list) else [shards]:
        confined(folder, shard.get("file") if isinstance(shard, dict) else shard, "activation shard")


def _stage_folders(ws: Workspace, src: Path, manifest: dict) -> tuple[Path, dict[str, dict[str, Path]]]:
    sweep_staging(ws.root)  # what killed imports (and other killed runs) left at the top of the workspace
    stage = staging_dir(ws.root, "import")
    staged: dict[str, dict[str, Path]] = {}
    try:
        for kind in ("dictionaries", "activations"):
            staged[kind] = {}
            for name, entry in manifest[kind].items():
                staged[kind][name] = confined(stage / kind, name, KINDS[kind])
                shutil.copytree(_inside(src, entry["folder"]), staged[kind][name], symlinks=True)
        refuse_symlinks(stage, "export")  # a link that appeared after the check is not carried in
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return stage, staged


def import_db(ws: Workspace, con: duckdb.DuckDBPyConnection | None, src: str | Path,
              replace: bool = False) -> ImportSummary:
    """Restore an export into the workspace `ws`. `con`: its store open for writing, or None: the store is
    opened only to check it and for the restore transaction, not while files are verified and copied.

    Every checksum, table name and every name that becomes a path is checked before anything is written;
    the folders are staged in WORKSPACE/.import.partial-PID@HOST-XXXX, removed whatever happens, and moved into
    place inside the restore transaction, before its commit: a killed import leaves either nothing the store
    refers to, or everything.
    """
    src = Path(src).expanduser()
    manifest = verify_export(src)
    store = con if con is not None else ws.db_path
    with borrow(store) as con:
        _check_importable(ws, con, src, manifest, replace)
    stage, staged = _stage_folders(ws, src, manifest)
    try:
        with borrow(store) as con:
            _check_importable(ws, con, src, manifest, replace)  # again: another process may have written meanwhile
            summary = _restore_tables(ws, con, src, manifest, staged, replace)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    summary.dictionaries = sorted(staged["dictionaries"])
    return summary


def _check_importable(ws: Workspace, con: duckdb.DuckDBPyConnection, src: Path, manifest: dict,
                      replace: bool) -> None:
    ours = schema_version(con)
    if manifest["schema_version"] > ours:
        raise InputError(f"the export has schema version {manifest['schema_version']}, this SparseScope "
                         f"knows up to {ours}: upgrade SparseScope first")
    _check_names(ws, con, src, manifest)
    if not replace and not store_is_empty(con):
        raise InputError(f"workspace {ws.root} already holds data; import into an empty workspace or pass --replace")


def _restore_tables(ws: Workspace, con: duckdb.DuckDBPyConnection, src: Path, manifest: dict,
                    staged: dict[str, dict[str, Path]], replace: bool) -> ImportSummary:
    summary = ImportSummary()
    tables = user_tables(con)
    with transaction(con, "import_db"):
        if replace:
            for table in reversed(tables):
                con.execute(f"DELETE FROM {_ident(table)}")
        for table in tables:  # older exports lack some tables; unknown ones were refused in _check_names
            if table in manifest["tables"]:
                path = _inside(src, manifest["tables"][table]["file"])
                try:
                    con.execute(f"INSERT INTO {_ident(table)} BY NAME SELECT * FROM read_parquet(?)", [str(path)])
                except duckdb.Error as exc:
                    raise InputError(f"cannot restore table {table}: {str(exc).splitlines()[0]}") from None
                summary.rows[table] = con.execute(f"SELECT count(*) FROM {_ident(table)}").fetchone()[0]
        _rewrite_paths(ws, con, staged, summary)
        _advance_sequences(con)
        for kind, folders in staged.items():
            _move_into_place(ws, kind, folders)
    return summary


def _rewrite_paths(ws: Workspace, con: duckdb.DuckDBPyConnection, staged: dict, summary: ImportSummary) -> None:
    for (name,) in con.execute("SELECT name FROM dictionaries").fetchall():
        con.execute("UPDATE dictionaries SET path = ? WHERE name = ?", [str(ws.named("dictionaries", name)), name])
    for (name,) in con.execute("SELECT name FROM activation_caches").fetchall():
        moved = name in staged["activations"]
        con.execute("UPDATE activation_caches SET path = ?, complete = complete AND ? WHERE name = ?",
                    [str(ws.named("activations", name)), moved, name])
        if not moved:
            summary.caches_without_files.append(name)


def _advance_sequences(con: duckdb.DuckDBPyConnection) -> None:
    """Move each id sequence past the imported ids (DuckDB has no setval), so new rows get fresh ids."""
    for table, column, default in con.execute(
            "SELECT table_name, column_name, column_default FROM duckdb_columns() "
            "WHERE column_default LIKE 'nextval(%'").fetchall():
        sequence = default.split("'")[1]
        top = con.execute(f"SELECT coalesce(max({_ident(column)}), 0) FROM {_ident(table)}").fetchone()[0]
        value = con.execute("SELECT nextval(?)", [sequence]).fetchone()[0]
        if value <= top:
            con.execute("SELECT max(nextval(?)) FROM range(?)", [sequence, int(top - value)])


def _move_into_place(ws: Workspace, kind: str, staged: dict[str, Path]) -> None:
    (ws.root / kind).mkdir(parents=True, exist_ok=True)
    for name, folder in staged.items():
        swap_folder(folder, ws.named(kind, name))


def import_labels(con: duckdb.DuckDBPyConnection, dictionary: str, labels: list[tuple[int, str, str]]) -> int:
    """Write (feature, label, notes) rows for `dictionary` in one transaction; returns how many were written.

    Labels live apart from analysis results, so a dictionary that is not analysed yet can receive them. An
    empty label or note keeps the local one: a report exported before it was written must not erase it.
    """
    with transaction(con):
        for feature, label, notes in labels:
            con.execute("INSERT INTO feature_labels (dictionary, feature, label, notes, updated) "
                        "VALUES (?, ?, ?, ?, current_timestamp) ON CONFLICT (dictionary, feature) DO UPDATE SET "
                        "label = CASE WHEN excluded.label = '' THEN feature_labels.label ELSE excluded.label END, "
                        "notes = CASE WHEN excluded.notes = '' THEN feature_labels.notes ELSE excluded.notes END, "
                        "updated = now()", [dictionary, int(feature), label, notes])
    return len(labels)
