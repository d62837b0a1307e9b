"""Page scripts hold no bare string statements besides their docstring: Streamlit's magic would print them."""
import ast
from pathlib import Path

import pytest

UI = Path(__file__).resolve().parents[3] / "app" / "ui"
PAGES = sorted((UI / "views").glob("*.py"))


def test_page_scripts_are_found_and_no_pages_folder_exists():
    """A pages/ folder beside the entry script makes Streamlit serve a first-request deep link straight from the
    page script, bypassing the router (app/ui/main.py); the scripts live in views/."""
    from app.ui.main import PAGES as REGISTERED

    assert not (UI / "pages").exists()
    assert {UI / p.path for p in REGISTERED} == set(PAGES)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_bare_strings_in_page_scripts(page):
    body = ast.parse(page.read_text(encoding="utf-8")).body
    bare = [node.lineno for node in body[1:] if isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)]
    assert bare == [], f"{page.name}: bare strings on lines {bare} would be shown on the page"
