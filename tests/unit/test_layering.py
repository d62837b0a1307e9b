"""Imports flow one way: app -> analysis -> (sae, store); store never imports torch; nothing imports app.

Inside analysis, a capability subpackage (features/, heads/, steering/, reports/, explain/, tasks/) imports the
shared top-level modules and its own package, never a sibling; the shared modules import no subpackage. Inside
app, commands/ and ui/ do not import each other, and in ui/ only data/ holds st.cache_*.
`sae` may import the shared leaves `store.errors` (the project's InputError), `store.paths` (confined names,
durable writes, staging) and `store.faults` (crash points of the fault tests), and nothing else of `store`.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "store": {"torch", "sae", "analysis", "app", "transformer_lens", "sae_lens", "transformers"},
    "sae": {"store", "analysis", "app"},
    "analysis": {"app"},
    "bench": {"app.commands"},
}
ALLOWED = {"sae": {"store.errors", "store.paths", "store.faults"}}
"""Modules a package may import although their root is forbidden to it."""
SUBPACKAGES = {"analysis": ("features", "heads", "steering", "reports", "explain", "attribution", "tasks"),
               "app": ("commands", "ui")}


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _forbidden(package: str, module: str) -> bool:
    if any(module == ok or module.startswith(ok + ".") for ok in ALLOWED.get(package, ())):
        return False
    return any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN[package])


def _offenders(files, rule) -> dict[str, list[str]]:
    bad = {str(f.relative_to(ROOT)): sorted(m for m in imported_modules(f) if rule(f, m)) for f in files}
    return {f: mods for f, mods in bad.items() if mods}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_layering(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no python files in {package}"
    offenders = _offenders(files, lambda f, m: _forbidden(package, m))
    # a `from sae.errors import X` style import of a root module shows as both "store" and "store.errors"
    assert {f: [m for m in mods if m.count(".") or m in FORBIDDEN[package]] for f, mods in offenders.items()} == {}


def _subpackage(package: str, path_or_module) -> str | None:
    """The subpackage a file or dotted module belongs to (None: the package's top level)."""
    parts = (path_or_module.relative_to(ROOT / package).parts if isinstance(path_or_module, Path)
             else path_or_module.split(".")[1:])
    return parts[0] if len(parts) > 1 and parts[0] in SUBPACKAGES[package] else None


@pytest.mark.parametrize("package", sorted(SUBPACKAGES))
def test_subpackages_import_only_downward(package):
    def sideways_or_up(path: Path, module: str) -> bool:
        if module.split(".")[0] != package:
            return False
        mine, theirs = _subpackage(package, path), _subpackage(package, module)
        if package == "app" and mine is None:  # app/cli.py is the entry point: it registers the commands
            return False
        return theirs is not None and theirs != mine

    files = sorted((ROOT / package).rglob("*.py"))
    assert _offenders(files, sideways_or_up) == {}


def _caches(path: Path) -> bool:
    """Whether the file uses st.cache_data / st.cache_resource (in code, not in a docstring)."""
    return any(isinstance(node, ast.Attribute) and node.attr.startswith("cache_") and
               isinstance(node.value, ast.Name) and node.value.id == "st"
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))))


def test_only_the_ui_data_layer_caches():
    ui = ROOT / "app" / "ui"
    caching = {str(f.relative_to(ui)) for f in ui.rglob("*.py") if _caches(f)}
    assert caching and all(name.startswith("data/") for name in caching), caching


def test_the_checks_catch_what_they_name():
    # the rules above must be able to fail: a sideways import and a forbidden root are both seen
    assert _forbidden("sae", "store.db") and not _forbidden("sae", "store.errors")
    assert _subpackage("analysis", "analysis.heads.scan") == "heads"
    assert _subpackage("analysis", "analysis.evaluate") is None


def test_store_import_does_not_load_torch():
    code = "import sys, store, store.queries, store.corpora; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
