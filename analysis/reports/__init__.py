"""Feature reports: a dictionary and chosen features exported as HTML, Markdown, JSON or PDF.

    report = collect_report(con, "topk-demo", Selection(top=10, by="density"))
    write_report(report, "html", Path("reports/topk.html"))

`collect.py` gathers the Report from the store (graphs.py the attribution graphs attached with `graphs=[ID]`,
drawn by analysis/graph_view.py as on the Attribution page; task_evals.py the dictionary's stored `eval-task`
results, drawn by analysis/task_view.py as on the Evaluations page); html.py / markdown.py / json_io.py render it;
browser.py drives headless Chromium (PNG figures through kaleido, PDF printing); neuronpedia.py exports dashboards in
the layout Neuronpedia uploads, with the explanation records it imports. The JSON schema is documented in
SCHEMA.md.
"""
from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import duckdb

from analysis.reports.browser import figures_to_png, find_browser, html_to_pdf
from analysis.reports.collect import Report, ReportConfig, Selection, collect_report, select_features
from analysis.reports.html import render_html
from analysis.reports.json_io import import_report, report_to_json
from analysis.reports.markdown import render_markdown
from analysis.reports.output import check_out_path, figures_folder, folder_beside, temp_beside, write_atomic
from store.errors import InputError
from store.paths import MARKER, check_output_folder, mark_output
from store.workspace import Workspace

FORMATS = ("html", "md", "json", "pdf")
MIME = {"html": "text/html", "md": "application/zip", "json": "application/json", "pdf": "application/pdf"}
"""What `report_bytes` returns per format (Markdown comes zipped with its PNG figures)."""


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InputError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def check_report_target(fmt: str, out: str | Path, force: bool = False) -> Path:
    """The report's output path, checked before any work: a new file (or `force`); for Markdown with figures
    also OUT_STEM_files, which `force` replaces only when SparseScope wrote it."""
    out = check_out_path(out, force)
    if fmt == "md" and find_browser() is not None:
        check_output_folder(figures_folder(out), force)
    return out


def _write_markdown(report: Report, out: Path, force: bool) -> list[Path]:
    target = figures_folder(out)
    with_images = find_browser() is not None
    text, images = render_markdown(report, target.name, with_images=with_images)
    if not images:
        write_atomic(out, text)
        return [out]
    with folder_beside(target, force) as tmp:
        figures_to_png({tmp / Path(rel).name: fig for rel, fig in images.items()})
        write_atomic(out, text)
    return [out, *sorted(p for p in target.iterdir() if p.name != MARKER)]


def write_report(report: Report, fmt: str, out: str | Path, force: bool = False) -> list[Path]:
    """Write the report in `fmt` to `out` (Markdown also writes OUT_STEM_files/*.png); returns the files.

    Nothing partial is left behind: every file is written under a temporary name and renamed at the end. An
    existing file is replaced only with `force` (see check_report_target).
    """
    check_format(fmt)
    out = check_report_target(fmt, out, force)
    if fmt == "html":
        write_atomic(out, render_html(report))
    elif fmt == "json":
        write_atomic(out, report_to_json(report))
    elif fmt == "pdf":
        html = render_html(report)
        with temp_beside(out, ".pdf") as tmp:
            html_to_pdf(html, tmp)
    else:
        return _write_markdown(report, out, force)
    return [out]


def report_bytes(report: Report, fmt: str) -> bytes:
    """The report as one downloadable file in memory (Markdown: a zip of report.md and its PNGs)."""
    check_format(fmt)
    if fmt == "html":
        return render_html(report).encode("utf-8")
    if fmt == "json":
        return report_to_json(report).encode("utf-8")
    with tempfile.TemporaryDirectory(prefix="sparsescope-report-") as tmp:
        out = Path(tmp) / f"report.{fmt}"
        files = write_report(report, fmt, out)
        if fmt == "pdf":
            return out.read_bytes()
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                zf.write(path, path.relative_to(tmp).as_posix())
        return buffer.getvalue()


def write_demo_report(ws: Workspace, con: duckdb.DuckDBPyConnection, dictionary: str, top: int = 5) -> Path:
    """The demo's Markdown report of a dictionary's `top` densest features, in WORKSPACE/reports/DICT.md
    (the demo's own file: a rerun replaces it)."""
    out = ws.named("reports", dictionary, ".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    figures = figures_folder(out)
    if figures.is_dir() and not figures.is_symlink() and not (figures / MARKER).exists():
        mark_output(figures)  # an earlier demo's, in the workspace's own reports folder: the demo may replace it
    report = collect_report(con, dictionary, Selection(top=top, by="density"))
    return write_report(report, "md", out, force=True)[0]


__all__ = ["FORMATS", "MIME", "Report", "ReportConfig", "Selection", "check_format", "check_report_target",
           "collect_report", "import_report", "render_html", "render_markdown", "report_bytes", "report_to_json",
           "select_features", "write_demo_report", "write_report"]
