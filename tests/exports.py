"""Builders for the workspace-portability tests: a demo-shaped workspace to export (make_workspace), its table
rows without paths (table_rows), and hostile exports (hostile + CASES: each edit an attacker could make to an
export, with the error line it must meet)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from store import Workspace, session
from store.models import CacheRow, upsert_cache
from store.paths import MARKER
from store.portability import MANIFEST, sha256_file, sql_string_literal, user_tables
from tests.factories import REPORT_DICTIONARIES, build_report_store

CACHE = "tiny-demo__blocks.1__demo-text"
PATH_COLUMNS = {"dictionaries": "path", "activation_caches": "path"}


def make_workspace(root) -> Workspace:
    space = Workspace.resolve(root)
    with session(space.db_path) as con:
        build_report_store(con, n_features=16, path_root=str(space.root))
        cache = space.activations_dir / CACHE
        cache.mkdir(parents=True)
        (cache / "manifest.json").write_text('{"complete": true}')
        upsert_cache(con, CacheRow(cache.name, "tiny-demo", "blocks.1.hook_resid_post", "demo-text", 64, 6400,
                                   str(cache), True))
    for name in REPORT_DICTIONARIES:
        folder = space.dictionaries_dir / name
        folder.mkdir(parents=True)
        (folder / "cfg.json").write_text(json.dumps({"d_in": 64, "name": name}))
        (folder / "sae_weights.safetensors").write_bytes(bytes(range(256)) * 8)
    return space


def table_rows(space: Workspace) -> dict[str, list[tuple]]:
    with session(space.db_path) as con:
        out = {}
        for table in user_tables(con):
            cols = [c for (c,) in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = ? "
                                              "ORDER BY column_index", [table]).fetchall()
                    if c != PATH_COLUMNS.get(table)]
            select = ", ".join(f'"{c}"' for c in cols)
            out[table] = sorted(map(repr, con.execute(f'SELECT {select} FROM "{table}"').fetchall()))
        return out


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under `folder`: a file's SHA-256, 'dir', or where a link points."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        out[rel] = f"-> {os.readlink(path)}" if path.is_symlink() else "dir" if path.is_dir() else \
            hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def hostile(exported: Path, tmp_path: Path, edit) -> Path:
    """A copy of the export changed by edit(folder, manifest), its checksums recomputed as an attacker would."""
    folder = tmp_path / "evil"
    shutil.copytree(exported, folder, symlinks=True)
    manifest = json.loads((folder / MANIFEST).read_text())
    edit(folder, manifest)
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not path.is_symlink() and rel not in (MANIFEST, MARKER):
            manifest["files"][rel] = sha256_file(path)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def rewrite_names(table: str, old: str, new: str):
    def edit(folder: Path, manifest: dict) -> None:
        import duckdb

        path = folder / "tables" / f"{table}.parquet"
        edited = path.with_name("edited.parquet")
        duckdb.execute("COPY (SELECT * REPLACE (CASE WHEN name = ? THEN ? ELSE name END AS name) FROM read_parquet("
                       f"{sql_string_literal(str(path))})) TO {sql_string_literal(str(edited))} (FORMAT parquet)",
                       [old, new])
        edited.replace(path)
    return edit


def rename_entry(kind: str, old: str, new: str, folder_value: str | None = None):
    """Rename a manifest entry; '{victim}' in the new name stands for the victim folder beside the export."""
    def edit(folder: Path, manifest: dict) -> None:
        entry = manifest[kind].pop(old)
        name = new.format(victim=folder.parent / "victim")
        manifest[kind][name] = {**entry, "folder": folder_value or entry["folder"]}
    return edit


def link_folder(folder: Path, manifest: dict) -> None:
    victim_copy = folder.parent / "victim" / "topk-demo"
    shutil.copytree(folder / "dictionaries" / "topk-demo", victim_copy)
    shutil.rmtree(folder / "dictionaries" / "topk-demo")
    (folder / "dictionaries" / "topk-demo").symlink_to(victim_copy)


def link_file(folder: Path, manifest: dict) -> None:
    (folder / "dictionaries" / "mp-demo" / "extra.txt").symlink_to(folder.parent / "victim" / "secret.txt")


def shard_out(folder: Path, manifest: dict) -> None:
    shards = [{"file": "../../../victim/secret.txt", "start_context": 0, "n_contexts": 1, "rows": 1, "bytes": 6,
               "sha256": "0" * 64}]
    (folder / "activations" / CACHE / "manifest.json").write_text(json.dumps({"complete": True, "shards": shards}))


def extra_checksum(rel: str):
    def edit(folder: Path, manifest: dict) -> None:
        manifest["files"][rel] = "0" * 64
    return edit


def unknown_table(folder: Path, manifest: dict) -> None:
    shutil.copy(folder / "tables" / "vocab.parquet", folder / "tables" / "evil.parquet")
    manifest["tables"]['evil"; DROP TABLE vocab; --'] = {"file": "tables/evil.parquet", "rows": 1}


def malformed(folder: Path, manifest: dict) -> None:
    manifest["dictionaries"] = ["../victim"]


CASES = {
    "dictionary name in the manifest": (rename_entry("dictionaries", "topk-demo", "../../victim"),
                                        "dictionary name '../../victim' must start with a letter"),
    "folder of a manifest entry": (rename_entry("dictionaries", "topk-demo", "topk-demo", "dictionaries/../../victim"),
                                   "points at 'dictionaries/../../victim'"),
    "cache name in the manifest": (rename_entry("activations", CACHE, "{victim}/Documents"),
                                   "activation cache name '/"),
    "dictionary row": (rewrite_names("dictionaries", "topk-demo", "../../../victim"),
                       "dictionary name '../../../victim' must start"),
    "cache row": (rewrite_names("activation_caches", CACHE, "../victim"), "activation cache name '../victim'"),
    "symlinked dictionary folder": (link_folder, "contains a symbolic link (dictionaries/topk-demo)"),
    "symlinked file": (link_file, "contains a symbolic link (dictionaries/mp-demo/extra.txt)"),
    "shard name with ../": (shard_out, "activation shard name '../../../victim/secret.txt' must start"),
    "checksum list names ../x": (extra_checksum("../x"), "manifest names a file outside the export folder: '../x'"),
    "checksum list names an absolute path": (extra_checksum("/etc/hostname"), "outside the export folder"),
    "table outside the schema": (unknown_table, "the export names table(s) this SparseScope's schema lacks"),
    "malformed manifest": (malformed, "is malformed: 'dictionaries'"),
}


