"""Page scripts hold no bare string statements besides their docstring: Streamlit's magic would print them."""
import ast
from pathlib import Path

import pytest

PAGES = sorted((Path(__file__).resolve().parents[2] / "app" / "ui" / "pages").glob("*.py"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_bare_strings_in_page_scripts(page):
    body = ast.parse(page.read_text(encoding="utf-8")).body
    bare = [node.lineno for node in body[1:] if isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)]
    assert bare == [], f"{page.name}: bare strings on lines {bare} would be shown on the page"
