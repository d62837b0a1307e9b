"""Where a workspace keeps its files: the DuckDB store, activation caches, dictionaries, reports."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from store.errors import InputError
from store.paths import confined

DEFAULT_WORKSPACE = "workspace"
ENV_VAR = "SPARSESCOPE_WORKSPACE"
KINDS = {"dictionaries": "dictionary", "activations": "activation cache", "reports": "dictionary",
         "checkpoints": "dictionary"}
"""The workspace's named folders, and what the name in each is (a report and a checkpoint take a dictionary's)."""
READ_ONLY_ENV = "SPARSESCOPE_READ_ONLY"
"""1: serve the workspace read-only (`sparsescope ui` sets it for its server when the store cannot be written)."""


@dataclass(frozen=True)
class Workspace:
    root: Path
    """The workspace folder; everything SparseScope writes lives under it."""

    @classmethod
    def resolve(cls, path: str | os.PathLike | None = None, create: bool = True) -> "Workspace":
        """Pick the workspace from `path`, else $SPARSESCOPE_WORKSPACE, else ./workspace."""
        # absolute, because the store records the paths of the dictionaries and caches it writes: a relative
        # path would break as soon as a command (or the UI) runs from another folder
        root = Path(path or os.environ.get(ENV_VAR) or DEFAULT_WORKSPACE).expanduser().absolute()
        if root.exists() and not root.is_dir():
            raise InputError(f"workspace path {root} is a file, not a folder")
        if create:
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"cannot create workspace {root}: {exc.strerror}") from None
        return cls(root)

    @property
    def db_path(self) -> Path:
        return self.root / "sparsescope.duckdb"

    def writable(self) -> bool:
        """Whether this process may write the store (DuckDB also writes a .wal file beside it)."""
        db = self.db_path
        return os.access(self.root, os.W_OK) and (not db.exists() or os.access(db, os.W_OK))

    @property
    def activations_dir(self) -> Path:
        return self.root / "activations"

    @property
    def dictionaries_dir(self) -> Path:
        return self.root / "dictionaries"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def named(self, kind: str, name: str, suffix: str = "") -> Path:
        """WORKSPACE/KIND/NAME+SUFFIX: the one way a name (from the CLI, the store or an import) becomes a path.

        The name must pass store.paths.check_name and the path, symlinks resolved, must be a direct child of
        WORKSPACE/KIND inside the workspace; InputError (one line) otherwise.
        """
        return confined(self.root / kind, name, KINDS[kind], suffix, root=self.root)
