"""The `sparsescope` Typer app and what every command shares: the workspace option, output helpers."""
from __future__ import annotations

import os
from contextvars import ContextVar
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(name="sparsescope", help="SparseScope: sparse dictionaries on language-model activations.",
                  no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
                  add_completion=False)
# Markup and emoji codes off: values from the store or the user ("[/INST]" in a prompt, ":smile:" in a label) print
# as they are. Style a line with rich.text.Text (Text.assemble((name, "bold"), ...)), never with "[bold]" markup.
console = Console(markup=False, emoji=False)
err_console = Console(stderr=True, markup=False, emoji=False)

WORKSPACE_HELP = "Workspace folder (env SPARSESCOPE_WORKSPACE, default ./workspace)."
# No envvar here: Workspace.resolve reads $SPARSESCOPE_WORKSPACE last, so `sparsescope -w DIR CMD` beats it too.
WorkspaceOpt = Annotated[Optional[str], typer.Option("--workspace", "-w", help=WORKSPACE_HELP, show_default=False)]
DeviceOpt = Annotated[Optional[str], typer.Option(
    "--device", help="cuda, mps or cpu (default: the best available).", show_default=False)]
ForceOpt = Annotated[bool, typer.Option(
    "--force", help="Replace an existing output file, or an output folder SparseScope wrote before.")]


_given_workspace: ContextVar[str | None] = ContextVar("given_workspace", default=None)
"""`sparsescope -w DIR CMD`: the workspace given before the command, for the command's run."""


@app.callback()
def _options(ctx: typer.Context, global_ws: Annotated[Optional[str], typer.Option(
        "--workspace", "-w", help=WORKSPACE_HELP + " Before the command, as in `git -C`: sparsescope -w DIR ui.",
        show_default=False)] = None) -> None:
    token = _given_workspace.set(global_ws)
    ctx.call_on_close(lambda: _given_workspace.reset(token))


def workspace(path: str | None, create: bool = True):
    """The command's own --workspace, else the one before the command, else $SPARSESCOPE_WORKSPACE, else
    ./workspace."""
    from store.workspace import Workspace

    return Workspace.resolve(path or _given_workspace.get(), create=create)


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


def help_filled_by(fill):
    """A click command class whose options' help comes from `fill()` (option name -> help) only when the help is
    shown: the registries behind it import torch, numpy or DuckDB (seconds), and filling the help in there keeps
    `sparsescope --help` and usage errors free of them (tests/unit/cli/test_startup.py)."""
    from typer.core import TyperCommand

    class FilledHelp(TyperCommand):
        def format_help(self, ctx, formatter) -> None:
            helps = fill()
            for param in self.params:
                if param.name in helps:
                    param.help = helps[param.name]
            super().format_help(ctx, formatter)

    return FilledHelp
