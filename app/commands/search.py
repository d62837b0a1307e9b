"""`sparsescope search-text`: the features that fire most on a text, in every dictionary of a model."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from app.commands.common import DeviceOpt, WorkspaceOpt, app, console, err_console, existing_workspace

SHOWN_FIRINGS = 4
"""Firing tokens listed per feature (the strongest)."""


def _names(text: str | None) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()] if text else []


def _firings(hit) -> Text:
    """The strongest tokens a feature fires on: 'token'@position activation, then how many more."""
    strongest = sorted(hit.firings, key=lambda f: -f.activation)
    parts = [f"{f.token!r}@{f.position} {f.activation:.3g}" for f in strongest[:SHOWN_FIRINGS]]
    more = len(strongest) - SHOWN_FIRINGS
    return Text(", ".join(parts) + (f" (+{more} more)" if more > 0 else ""))


def _table(group) -> Table:
    title = Text.assemble((group.dictionary, "bold"), f" \u00b7 {group.hook}",
                          ("" if group.analysed else " (not analysed)", "dim"))
    table = Table(title=title, title_justify="left")
    for column, justify in (("feature", "right"), ("max act", "right"), ("fires on", "left"),
                            ("density", "right"), ("label", "left")):
        table.add_column(column, justify=justify)
    for hit in group.hits:
        density = "-" if hit.density is None else f"{100 * hit.density:.3g}%"
        table.add_row(str(hit.feature), f"{hit.max_act:.4g}", _firings(hit), density, Text(hit.label or ""))
    return table


@app.command(name="search-text")
def search_text_cmd(
    text: Annotated[str, typer.Argument(help="The text to read (quote it).", show_default=False)],
    model: Annotated[Optional[str], typer.Option(
        help="Model whose dictionaries are searched (default: the workspace's one model, else the embedded one).",
        show_default=False)] = None,
    dictionaries: Annotated[Optional[str], typer.Option(
        help="Comma-separated dictionary names (default: every dictionary of the model).", show_default=False)] = None,
    top: Annotated[int, typer.Option(help="Features listed per dictionary.")] = 10,
    device: DeviceOpt = None,
    ws: WorkspaceOpt = None,
):
    """The features that fire most on TEXT in every dictionary of a model, grouped by hook and dictionary.

    The model runs once, up to the deepest hook; each feature is ranked by its largest activation on the text
    (the BOS token left out) and listed with the tokens it fires on, its density and its label when analysed.
    """
    from analysis.features.search_text import search_workspace

    result = search_workspace(existing_workspace(ws), text, model, _names(dictionaries), top, device)
    if result.truncated:
        err_console.print(f"note: the text is longer than {result.model}'s context: only its first "
                          f"{len(result.tokens)} tokens were read", markup=False, highlight=False, soft_wrap=True)
    for hook, groups in result.by_hook().items():
        console.print(Text.assemble(("hook ", "dim"), (hook, "bold cyan")))
        for group in groups:
            if group.hits:
                console.print(_table(group))
            else:
                console.print(Text.assemble((group.dictionary, "bold"), ": no feature fires on this text"))
