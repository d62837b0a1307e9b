"""The `sparsescope` Typer app and what every command shares: the workspace option, output helpers."""
from __future__ import annotations

import os
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(name="sparsescope", help="SparseScope: sparse dictionaries on language-model activations.",
                  no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
                  add_completion=False)
console = Console()
err_console = Console(stderr=True)

WorkspaceOpt = Annotated[Optional[str], typer.Option(
    "--workspace", "-w", help="Workspace folder (env SPARSESCOPE_WORKSPACE, default ./workspace).",
    envvar="SPARSESCOPE_WORKSPACE", show_default=False)]
DeviceOpt = Annotated[Optional[str], typer.Option(
    "--device", help="cuda, mps or cpu (default: the best available).", show_default=False)]
ForceOpt = Annotated[bool, typer.Option(
    "--force", help="Replace an existing output file, or an output folder SparseScope wrote before.")]


def workspace(path: str | None, create: bool = True):
    from store.workspace import Workspace

    return Workspace.resolve(path, create=create)


def existing_workspace(path: str | None):
    """The workspace of a command that reads what earlier commands stored: when it has no store yet, an input
    error, and neither the folder nor a store is created."""
    from store.errors import InputError

    space = workspace(path, create=False)
    if not space.db_path.exists():
        raise InputError(f"no store in {space.root}: nothing has run in this workspace yet "
                         "(`sparsescope demo` builds one; -w picks another workspace)")
    return space


def quiet() -> bool:
    """No progress bars when output is not a terminal and CI asked for quiet logs."""
    return bool(os.environ.get("SPARSESCOPE_QUIET"))
