"""Commands that move findings out of a workspace and back: reports, Neuronpedia export, whole-store export."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Iterator, List, Optional

import typer

from app.commands.common import ForceOpt, WorkspaceOpt, app, console, existing_workspace, quiet, workspace


@contextlib.contextmanager
def _reader(space) -> Iterator:
    """A read-only connection to an existing store (a running UI or job keeps working)."""
    from store import session

    with session(space.db_path, read_only=True) as con:
        yield con


def parse_features(text: str) -> tuple[int, ...]:
    from store.errors import InputError

    try:
        ids = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise InputError(f"--features takes comma-separated feature ids such as 12,40,77, got {text!r}") from None
    if not ids or any(i < 0 for i in ids):
        raise InputError(f"--features takes comma-separated non-negative feature ids, got {text!r}")
    return ids


@app.command(name="report")
def report_cmd(
    dictionary: Annotated[str, typer.Argument(help="Dictionary to report on.")],
    features: Annotated[Optional[str], typer.Option(help="Comma-separated feature ids, e.g. 12,40,77.",
                                                    show_default=False)] = None,
    top: Annotated[Optional[int], typer.Option(help="Report the first N features by --by (default 10).",
                                               show_default=False)] = None,
    by: Annotated[str, typer.Option(help="density, max_act or label (labelled features only).")] = "density",
    steering: Annotated[Optional[List[str]], typer.Option(help="Steering run id to attach (repeatable).",
                                                          show_default=False)] = None,
    heads: Annotated[bool, typer.Option("--heads", help="Add the model's attention head scores.")] = False,
    graph: Annotated[Optional[List[str]], typer.Option(help="Attribution graph id to attach, as `sparsescope "
                                                       "attribute` stored it (repeatable).",
                                                       show_default=False)] = None,
    fmt: Annotated[str, typer.Option("--format", help="html, md, json or pdf.")] = "html",
    out: Annotated[Optional[str], typer.Option(help="Output file (default WORKSPACE/reports/DICT.FORMAT).",
                                               show_default=False)] = None,
    force: ForceOpt = False,
    ws: WorkspaceOpt = None,
):
    """Write a report on a dictionary and chosen features: one self-contained HTML file, Markdown with PNG
    figures, JSON (re-importable labels) or PDF; optionally with steering runs, head scores and attribution
    graphs. The dictionary's stored task evaluations (`sparsescope eval-task`) get a section of their own."""
    from analysis.reports import Selection, check_format, check_report_target, collect_report, write_report
    from analysis.reports.browser import find_browser
    from store.errors import InputError

    check_format(fmt)
    if features is not None and top is not None:
        raise InputError("give either --features or --top, not both")
    space = existing_workspace(ws)
    target = Path(out) if out else space.named("reports", dictionary, f".{fmt}")
    if not out:
        target.parent.mkdir(parents=True, exist_ok=True)
    check_report_target(fmt, target, force)
    selection = Selection(features=parse_features(features)) if features is not None else \
        Selection(top=top if top is not None else 10, by=by)
    with _reader(space) as con:
        report = collect_report(con, dictionary, selection, steering=steering or [], heads=heads,
                                graphs=graph or [])
    files = write_report(report, fmt, target, force)
    size = sum(f.stat().st_size for f in files)
    extra = f" and {len(files) - 1} figure(s)" if len(files) > 1 else ""
    graphs = f" and {len(report.graphs)} attribution graph(s)" if report.graphs else ""
    graphs += f" and {len(report.task_evals)} task evaluation(s)" if report.task_evals else ""
    console.print(f"wrote {fmt} report of {len(report.features)} features{graphs} to {files[0]}{extra} "
                  f"({size / 1e6:.1f} MB)")
    if fmt == "md" and find_browser() is None:
        console.print("figures left out: PNGs need Chromium (apt-get install chromium); the HTML report has them")


@app.command(name="import-report")
def import_report_cmd(
    file: Annotated[str, typer.Argument(help="A JSON report (sparsescope report --format json).")],
    dict_name: Annotated[Optional[str], typer.Option("--dict", help="Dictionary to label (default: the "
                                                     "report's own).", show_default=False)] = None,
    ws: WorkspaceOpt = None,
):
    """Restore the labels, notes and explanations of a JSON report into this workspace."""
    from analysis.reports import import_report
    from store import session

    with session(existing_workspace(ws).db_path) as con:
        name, n = import_report(con, file, dict_name)
    console.print(f"restored labels, notes and explanations of {n} feature(s) into {name}", markup=False,
                  highlight=False)


@app.command(name="export-neuronpedia")
def export_neuronpedia_cmd(
    dictionary: Annotated[str, typer.Argument(help="Dictionary to export.")],
    out: Annotated[str, typer.Option(help="New folder for the batch files.")],
    features: Annotated[Optional[str], typer.Option(help="Comma-separated feature ids (default: all).",
                                                    show_default=False)] = None,
    batch: Annotated[int, typer.Option(help="Features per batch file.")] = 128,
    force: ForceOpt = False,
    ws: WorkspaceOpt = None,
):
    """Write a dictionary's dashboards in the JSON layout SAEDashboard uploads to Neuronpedia."""
    from analysis.reports.neuronpedia import export_neuronpedia

    ids = parse_features(features) if features is not None else None
    with _reader(existing_workspace(ws)) as con:
        folder, n = export_neuronpedia(con, dictionary, Path(out), features=ids, batch_size=batch,
                                       progress=not quiet(), force=force)
    console.print(f"wrote {n} feature dashboard(s) to {folder}")


@app.command(name="export-db")
def export_db_cmd(
    folder: Annotated[str, typer.Argument(help="New folder to write the export to.")],
    fmt: Annotated[str, typer.Option("--format", help="Only parquet.")] = "parquet",
    with_activations: Annotated[bool, typer.Option("--with-activations", help="Also copy the activation "
                                                   "caches (can be large).")] = False,
    force: ForceOpt = False,
    ws: WorkspaceOpt = None,
):
    """Export the whole workspace (every table as Parquet, the dictionaries' folders, SHA-256 manifest)."""
    from store.errors import InputError
    from store.portability import export_db

    if fmt != "parquet":
        raise InputError(f"unknown export format {fmt!r}; only parquet")
    # the store's path: export_db holds it only while it copies the tables, not while it copies folders
    manifest = export_db(existing_workspace(ws).db_path, folder, with_activations=with_activations, force=force)
    rows = sum(t["rows"] for t in manifest["tables"].values())
    console.print(f"exported {len(manifest['tables'])} tables ({rows:,} rows), {len(manifest['dictionaries'])} "
                  f"dictionary folder(s) and {len(manifest['files'])} checksummed files to {folder}")


@app.command(name="import-db")
def import_db_cmd(
    folder: Annotated[str, typer.Argument(help="A folder written by export-db.")],
    replace: Annotated[bool, typer.Option("--replace", help="Replace what the workspace holds.")] = False,
    ws: WorkspaceOpt = None,
):
    """Import an export-db folder into this workspace after verifying every checksum."""
    from store.portability import import_db

    space = workspace(ws)
    summary = import_db(space, None, folder, replace=replace)  # the store is held for the restore only
    console.print(f"imported {sum(summary.rows.values()):,} rows in {len(summary.rows)} tables and "
                  f"{len(summary.dictionaries)} dictionary folder(s) into {space.root}")
    if summary.caches_without_files:
        console.print(f"activation caches not in the export (rebuild them when needed): "
                      f"{', '.join(summary.caches_without_files)}")
