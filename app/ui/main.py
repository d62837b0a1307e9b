"""The SparseScope web UI: a router over the pages in PAGES. Served by `sparsescope ui`.

To add a page, write app/ui/pages/NAME.py (widgets only; data comes through app/ui/cache.py) and add a
PageSpec line to PAGES. Every page is reachable at /URL_PATH, with its inputs in the query string
(e.g. /feature?dict=NAME&feature=ID).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class PageSpec:
    path: str
    """Page script, relative to this folder."""
    title: str
    url_path: str
    icon: str | None = None
    default: bool = False


PAGES: list[PageSpec] = [
    PageSpec("pages/home.py", "Home", "home", ":material/home:", default=True),
    PageSpec("pages/browser.py", "Feature browser", "browser", ":material/table_rows:"),
    PageSpec("pages/feature.py", "Feature", "feature", ":material/neurology:"),
    PageSpec("pages/inspector.py", "Prompt inspector", "inspector", ":material/text_fields:"),
    PageSpec("pages/compare.py", "Compare", "compare", ":material/compare_arrows:"),
    PageSpec("pages/steering.py", "Steering", "steering", ":material/tune:"),
    PageSpec("pages/heads.py", "Attention heads", "heads", ":material/grid_view:"),
]


def page(url_path: str) -> PageSpec | None:
    """The registered page served at /url_path, if any (pages link to optional pages only when present)."""
    return next((p for p in PAGES if p.url_path == url_path), None)


def main() -> None:
    import streamlit as st

    from app.ui import cache

    st.set_page_config(page_title="SparseScope", page_icon=":material/neurology:", layout="wide")
    cache.begin_run()
    pages = [st.Page(HERE / p.path, title=p.title, url_path=p.url_path, icon=p.icon, default=p.default)
             for p in PAGES]
    st.navigation(pages).run()


if __name__ == "__main__":  # streamlit runs this file as __main__; importing it only reads PAGES
    main()
