"""The SparseScope web UI: a router over the pages in PAGES. Served by `sparsescope ui`.

To add a page, write app/ui/views/NAME.py (widgets only; data comes through app/ui/data/, which holds every
st.cache_*) and add a
PageSpec line to PAGES. Every page is reachable at /URL_PATH, with its inputs in the query string
(e.g. /feature?dict=NAME&feature=ID).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Page scripts live in views/, not pages/: Streamlit treats a pages/ folder beside the entry script as its older
# multipage app, and a deep link that is the first request after start-up was then served straight from the
# page script, without this router (no wide layout, file names in the sidebar).


@dataclass(frozen=True)
class PageSpec:
    path: str
    """Page script, relative to this folder."""
    title: str
    url_path: str
    icon: str | None = None
    default: bool = False


PAGES: list[PageSpec] = [
    PageSpec("views/home.py", "Home", "home", ":material/home:", default=True),
    PageSpec("views/browser.py", "Feature browser", "browser", ":material/table_rows:"),
    PageSpec("views/feature.py", "Feature", "feature", ":material/neurology:"),
    PageSpec("views/inspector.py", "Prompt inspector", "inspector", ":material/text_fields:"),
    PageSpec("views/search.py", "Search by text", "search", ":material/manage_search:"),
    PageSpec("views/compare.py", "Compare", "compare", ":material/compare_arrows:"),
    PageSpec("views/steering.py", "Steering", "steering", ":material/tune:"),
    PageSpec("views/heads.py", "Attention heads", "heads", ":material/grid_view:"),
    PageSpec("views/codes.py", "Code search", "codes", ":material/manage_search:"),
    PageSpec("views/attribution.py", "Attribution", "attribution", ":material/account_tree:"),
    PageSpec("views/evaluations.py", "Evaluations", "evaluations", ":material/fact_check:"),
    PageSpec("views/jobs.py", "Jobs", "jobs", ":material/work_history:"),
]


def page(url_path: str) -> PageSpec | None:
    """The registered page served at /url_path, if any (pages link to optional pages only when present)."""
    return next((p for p in PAGES if p.url_path == url_path), None)


def main() -> None:
    import streamlit as st

    from app.ui.data import cache

    st.set_page_config(page_title="SparseScope", page_icon=":material/neurology:", layout="wide")
    cache.begin_run()
    pages = [st.Page(HERE / p.path, title=p.title, url_path=p.url_path, icon=p.icon, default=p.default)
             for p in PAGES]
    st.navigation(pages).run()


if __name__ == "__main__":  # streamlit runs this file as __main__; importing it only reads PAGES
    main()
