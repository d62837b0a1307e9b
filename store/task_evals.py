"""Stored task evaluations (`sparsescope eval-task`): one JSON file per task, site, seed and --edit-features under
DICTIONARY_FOLDER/task_evals/, read back for the Evaluations page and the reports. Files, not tables: a result is
written once by its command and never edited.

    evals, notes = workspace_task_evals(con, ws.root)
    evals[0].dictionary, evals[0].run, evals[0].result["dictionaries"]["supervised"]["sufficiency"]

A file that cannot be read or is not an evaluation is skipped, with a note naming it and why.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb

from store.dictionaries import list_dictionaries, row_folder

RESULTS_FOLDER = "task_evals"
"""Under a dictionary's folder (or the workspace, for the supervised dictionary alone): one JSON per task, site,
seed and --edit-features."""
SUPERVISED = "supervised"
"""The key of the supervised dictionary among a result's dictionaries."""


@dataclass(frozen=True)
class TaskEval:
    dictionary: str
    """The workspace dictionary whose folder holds the file (the learned dictionary evaluated)."""
    run: str
    """The file's stem, TASK-HOOK-seedS-editN: names the evaluation within its dictionary."""
    path: str
    task: str
    hook: str
    seed: int
    edit_features: int
    result: dict
    """The file as `eval-task` saved it: model_check, dictionaries (supervised and the learned one), settings."""

    @property
    def learned(self) -> dict:
        """The learned dictionary's figures (empty when the file lacks them)."""
        found = self.result["dictionaries"].get(self.dictionary)
        return found if isinstance(found, dict) else {}

    @property
    def supervised(self) -> dict:
        return self.result["dictionaries"][SUPERVISED]


def _problem(data) -> str | None:
    """Why `data` is not an evaluation `eval-task` wrote (None when it is one)."""
    if not isinstance(data, dict):
        return "not a JSON object"
    for key, kind in (("task", str), ("hook", str), ("seed", int), ("edit_features", int),
                      ("model_check", dict), ("dictionaries", dict)):
        if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
            return f"no {key}"
    if not isinstance(data["dictionaries"].get(SUPERVISED), dict):
        return "no supervised dictionary"
    return None


def read_task_evals(folder: Path, dictionary: str) -> tuple[list[TaskEval], list[str]]:
    """The evaluations in FOLDER/task_evals/*.json, by file name, and a note for every file skipped."""
    evals, notes = [], []
    for path in sorted((Path(folder) / RESULTS_FOLDER).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            notes.append(f"{path}: skipped, not readable as JSON ({type(exc).__name__})")
            continue
        problem = _problem(data)
        if problem is not None:
            notes.append(f"{path}: skipped, not a task evaluation ({problem})")
            continue
        evals.append(TaskEval(dictionary, path.stem, str(path), data["task"], data["hook"], data["seed"],
                              data["edit_features"], data))
    return evals, notes


def dictionary_folders(con: duckdb.DuckDBPyConnection, root: Path | None) -> list[tuple[str, Path]]:
    """(name, folder) of every stored dictionary: the recorded folder, else ROOT/dictionaries/NAME (a workspace
    moved with its store)."""
    return [(row.name, row_folder(row, root)) for row in list_dictionaries(con)]


def database_root(con: duckdb.DuckDBPyConnection) -> Path | None:
    """The folder of the connection's database file (the workspace), None for an in-memory store."""
    path = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0]
    return Path(path).parent if path else None


def task_evals_in(folders: list[tuple[str, Path]]) -> tuple[list[TaskEval], list[str]]:
    """Every evaluation under the (name, folder) pairs, by dictionary then file name, and the notes of files
    skipped."""
    evals, notes = [], []
    for name, folder in sorted(folders):
        found, skipped = read_task_evals(folder, name)
        evals += found
        notes += skipped
    return evals, notes


def workspace_task_evals(con: duckdb.DuckDBPyConnection, root: Path | None) -> tuple[list[TaskEval], list[str]]:
    """Every stored dictionary's evaluations (see task_evals_in)."""
    return task_evals_in(dictionary_folders(con, root))


def files_stamp(folders: list[tuple[str, Path]]) -> tuple:
    """(path, mtime, size) of every result file under the folders: changes when a run saves or replaces one."""
    stamp = []
    for _, folder in sorted(folders):
        for path in sorted((Path(folder) / RESULTS_FOLDER).glob("*.json")):
            try:
                stat = path.stat()
            except OSError:
                continue
            stamp.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(stamp)
