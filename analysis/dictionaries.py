"""Dictionaries in a workspace by name: open one, check a new name, import an existing SAELens dictionary.

    row, sae = open_dictionary(ws, "demo-topk", device="cpu")   # the one way to load a dictionary by name

Training lives in analysis/training.py.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from store import dictionaries as repo
from store.db import transaction
from store.errors import InputError
from store.paths import refuse_symlinks, staging_dir, sweep_staging
from store.workspace import Workspace

if TYPE_CHECKING:
    import torch


def dictionary_folder(ws: Workspace, row: repo.DictionaryRow) -> Path:
    """The dictionary's folder: as recorded, else under this workspace (a store moved with its workspace)."""
    return repo.row_folder(row, ws.root)


def open_dictionary(ws: Workspace, name: str, device: str | None = None,
                    con: duckdb.DuckDBPyConnection | None = None):
    """(store row, loaded dictionary) of the workspace dictionary `name`, on `device` (None: the best there is).

    The dictionary takes flat rows (hook_z heads flattened head-major; see sae.dictionaries.load_dictionary).
    Reads the row through `con` when given, else on a short read session. InputError for an unknown name,
    a missing folder or weights that cannot be loaded.
    """
    from sae.device import pick_device
    from sae.dictionaries import load_dictionary
    from store.db import session

    if con is None:
        with session(ws.db_path, read_only=True) as con:
            row = repo.require_dictionary(con, name)
    else:
        row = repo.require_dictionary(con, name)
    folder = dictionary_folder(ws, row)
    if not folder.is_dir():
        raise InputError(f"dictionary {name!r}: its folder {folder} is missing")
    try:
        return row, load_dictionary(folder, device=pick_device(device))
    except ValueError as exc:
        raise InputError(f"dictionary {name!r}: {exc}") from None


def check_new_name(ws: Workspace, con, name: str, allow_folder: bool = False) -> None:
    """InputError unless `name` is a valid dictionary name that no dictionary (row or folder) uses yet."""
    repo.check_name(name)
    if con is not None and repo.get_dictionary(con, name) is not None:
        raise InputError(f"dictionary {name!r} already exists (choose another --name)")
    folder = ws.named("dictionaries", name)
    if folder.exists() and not allow_folder:
        raise InputError(f"folder {folder} already exists (left by an earlier run?); delete it or choose "
                         "another --name")


# ---------------------------------------------------------------------------------------------- import

def load_for_import(ref: str, device: str | torch.device = "cpu"):
    """(sae, local folder or None) for `saelens:RELEASE/ID` or a local SAELens-format folder, on `device`, taking
    flat rows like every dictionary SparseScope loads (hook_z reshaping off)."""
    from sae.dictionaries import load_dictionary

    if ref.startswith("saelens:"):
        release, _, sae_id = ref[len("saelens:"):].partition("/")
        if not release or not sae_id:
            raise InputError(f"{ref!r}: expected saelens:RELEASE/ID, e.g. "
                             "saelens:gpt2-small-res-jb/blocks.8.hook_resid_pre")
        from sae_lens import SAE

        try:
            sae = SAE.from_pretrained(release, sae_id, device=str(device))
        except Exception as exc:  # noqa: BLE001 - registry lookups and downloads fail in many ways
            raise InputError(f"cannot load {ref} from the SAELens registry: {str(exc).splitlines()[0]}") from None
        sae.turn_off_forward_pass_hook_z_reshaping()
        return sae, None
    path = Path(ref).expanduser()
    if not (path / "cfg.json").is_file():
        raise InputError(f"{path} is not a SAELens dictionary folder (no cfg.json), nor saelens:RELEASE/ID")
    refuse_symlinks(path, "SAELens folder")  # a link would be read, and copied in, from anywhere
    try:
        return load_dictionary(path, device=device), path
    except ValueError as exc:  # load_dictionary reports a bad folder in one line
        raise InputError(str(exc)) from None


def import_name(ref: str, name: str | None) -> str:
    """The workspace name of an import: `name`, else the folder's name or RELEASE_ID."""
    default = ref[len("saelens:"):] if ref.startswith("saelens:") else Path(ref).expanduser().name
    return name or default.replace("/", "_")


def import_row(ws: Workspace, ref: str, name: str, sae, path: Path | None, model: str | None = None):
    """The store row of an imported dictionary (model: the name to record, default the dictionary's own)."""
    from sae.dictionaries import arch_of

    meta, cfg = sae.cfg.metadata, sae.cfg
    return repo.DictionaryRow(name, model or meta.model_name or "", meta.hook_name or "", arch_of(sae).name,
                              cfg.d_in, cfg.d_sae, getattr(cfg, "k", None), str(ws.named("dictionaries", name)),
                              source=ref if path is None else str(path.resolve()))


def install_dictionary(ws: Workspace, store, row: repo.DictionaryRow, sae, path: Path | None,
                       metrics: dict | None = None) -> repo.DictionaryRow:
    """Copy (or save) an imported dictionary into the workspace and record it with its metrics in one
    transaction. `store`: an open connection, or the store's path: then it is opened only after the copy,
    for the name check and the transaction. The folder is removed again when the record fails."""
    from store.db import borrow

    folder = Path(row.path)
    folder.parent.mkdir(parents=True, exist_ok=True)
    sweep_staging(folder.parent)  # what killed imports and saves left
    tmp = staging_dir(folder.parent, row.name)
    try:
        if path is not None:
            shutil.copytree(path, tmp, symlinks=True, dirs_exist_ok=True)
        else:
            sae.save_model(tmp)
        with borrow(store) as con:
            check_new_name(ws, con, row.name)  # again: another process may have taken it while this one copied
            os.replace(tmp, folder)
            try:
                with transaction(con, "import"):
                    repo.add_dictionary(con, row)
                    repo.set_metrics(con, row.name, metrics or {})
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            return repo.require_dictionary(con, row.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def import_dictionary(ws: Workspace, con: duckdb.DuckDBPyConnection, ref: str,
                      name: str | None = None) -> repo.DictionaryRow:
    """Add an existing SAELens-format dictionary: a local folder (copied in) or saelens:RELEASE/ID, without
    evaluating it (analysis/byod.py imports and evaluates)."""
    name = import_name(ref, name)
    check_new_name(ws, con, name)
    sae, path = load_for_import(ref)
    return install_dictionary(ws, con, import_row(ws, ref, name, sae, path), sae, path)
