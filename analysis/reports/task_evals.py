"""Task evaluations in a report (`sparsescope eval-task`): every evaluation stored in the report dictionary's folder,
each with the other dictionaries evaluated alike, drawn and tabled by analysis/task_view.py as on the Evaluations
page. A report on a dictionary without any has no such section."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from analysis.task_view import command, comparable, evals_figure
from store.task_evals import TaskEval, database_root, dictionary_folders, read_task_evals, task_evals_in

SECTION = "task-evals"
"""The id of the section (the contents link to it)."""


@dataclass
class TaskEvalEntry:
    picked: TaskEval
    peers: list[TaskEval] = field(default_factory=list)
    """The picked evaluation, then the other dictionaries' evaluations with the same settings."""

    @property
    def command(self) -> str:
        return command(self.picked)

    def figure_dict(self) -> dict:
        return evals_figure(self.picked, self.peers).to_dict()


def task_eval_entries(con: duckdb.DuckDBPyConnection, dictionary: str) -> tuple[list[TaskEvalEntry], list[str]]:
    """The dictionary's stored evaluations (by run) and a note for every file of its folder skipped."""
    folders = dictionary_folders(con, database_root(con))
    own = [Path(folder) for name, folder in folders if name == dictionary]
    if not own:
        return [], []
    mine, notes = read_task_evals(own[0], dictionary)
    if not mine:
        return [], notes
    everyone, _ = task_evals_in(folders)
    return [TaskEvalEntry(e, comparable(everyone, e)) for e in mine], notes
