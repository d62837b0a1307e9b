"""The tests mirror the code: tests/unit/<room>/ for each code room, builders in tests/factories.py, fixtures in
conftest.py files, and no file under tests/ imports from a test module (pytest collects those; a fixture or
builder imported from one runs twice or hides where it lives).
"""
import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
ROOMS = {"cli": "app/commands", "dictionaries": "sae/dictionaries", "features": "analysis/features",
         "heads": "analysis/heads", "steering": "analysis/steering", "store": "store", "reports": "analysis/reports",
         "explain": "analysis/explain", "attribution": "analysis/attribution", "tasks": "analysis/tasks",
         "ui": "app/ui",
         "jobs": "app/jobs"}
"""tests/unit/<room>/ -> the code it tests."""
PLAIN_MODULES = ("factories.py", "chat_server.py")
"""Helper modules that bench scripts import too: no pytest in them."""


def _is_test_module(name: str) -> bool:
    return name.split(".")[-1].startswith("test_")


def imports_of_test_modules(path: Path, tests: Path = TESTS) -> list[str]:
    """The test_*.py modules under `tests` that the file at `path` imports, dotted as written."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if _is_test_module(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if any(part.startswith("test_") for part in (node.module or "").split(".")):
                found.append(module)
                continue
            # `from tests.unit.reports import test_collect`, `from . import test_collect`
            base = path.parent.joinpath(*[".."] * (node.level - 1)) if node.level else tests.parent
            folder = base.joinpath(*node.module.split(".")) if node.module else base
            found += [f"{module}.{alias.name}" if node.module else module + alias.name for alias in node.names
                      if alias.name.startswith("test_") and (folder / f"{alias.name}.py").is_file()]
    return found


def stray_rooms(unit: Path) -> list[str]:
    """Subfolders of tests/unit that mirror no code room."""
    return sorted(p.name for p in unit.iterdir() if p.is_dir() and p.name != "__pycache__" and p.name not in ROOMS)


def fixtures_outside_conftest(tests: Path) -> list[str]:
    """Helper modules (neither test_*.py nor conftest.py) that define a pytest fixture."""
    found = []
    for path in sorted(tests.rglob("*.py")):
        if path.name == "conftest.py" or path.name.startswith("test_"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and any("fixture" in ast.unparse(d) for d in node.decorator_list):
                found.append(f"{path.relative_to(tests)}::{node.name}")
    return found


def imported_roots(path: Path) -> set[str]:
    """Top-level packages the file at `path` imports (absolute imports)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_nothing_imports_from_a_test_module():
    offenders = {str(p.relative_to(TESTS)): imports_of_test_modules(p) for p in sorted(TESTS.rglob("*.py"))}
    assert {f: mods for f, mods in offenders.items() if mods} == {}


def test_unit_folders_mirror_the_code_rooms():
    assert stray_rooms(TESTS / "unit") == []
    assert [room for room, code in ROOMS.items() if not (ROOT / code).is_dir()] == []


def test_fixtures_live_in_conftest_files():
    assert fixtures_outside_conftest(TESTS) == []


def test_bench_scripts_can_import_the_factories():
    assert [name for name in PLAIN_MODULES if "pytest" in imported_roots(TESTS / name)] == []


def test_the_checks_catch_what_they_name(tmp_path):
    # the rules above must be able to fail: a small bad tests/ tree breaks each of them
    tests = tmp_path / "tests"
    (tests / "unit" / "reports").mkdir(parents=True)
    (tests / "unit" / "misc").mkdir()
    (tests / "unit" / "reports" / "test_collect.py").write_text("def build(): ...\n")
    bad = tests / "unit" / "reports" / "test_report.py"
    bad.write_text("from tests.unit.reports.test_collect import build\n"
                   "from tests.unit.reports import test_collect\n"
                   "from . import test_collect as again\n"
                   "import tests.unit.reports.test_collect\n"
                   "from .test_collect import build as b\n"
                   "from tests.helpers import run_cli\n")
    assert imports_of_test_modules(bad, tests) == [
        "tests.unit.reports.test_collect", "tests.unit.reports.test_collect", ".test_collect",
        "tests.unit.reports.test_collect", ".test_collect"]
    assert stray_rooms(tests / "unit") == ["misc"]
    (tests / "store.py").write_text("import pytest\n\n@pytest.fixture\ndef ui_ws(): ...\n")
    assert fixtures_outside_conftest(tests) == ["store.py::ui_ws"]
    assert "pytest" in imported_roots(tests / "store.py")
    assert imported_roots(bad) == {"tests"}
