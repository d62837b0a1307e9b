"""No code path unpickles: a file in a (shared) workspace must never be a way to run code.

`torch.load` is allowed only with weights_only=True; pickle, dill, cloudpickle, joblib and shelve are never
imported, and numpy never loads with allow_pickle=True.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "analysis", "sae", "store")
UNPICKLERS = {"pickle", "dill", "cloudpickle", "joblib", "shelve", "_pickle"}


def _is_true(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def pickle_uses(source: str) -> list[str]:
    """Where `source` may unpickle: imports of unpicklers, torch.load without weights_only=True,
    numpy loads with allow_pickle=True."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in UNPICKLERS]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNPICKLERS:
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if name.endswith("load") and name.split(".")[0] == "torch" or name == "load" and "weights_only" in keywords:
                if not _is_true(keywords.get("weights_only", ast.Constant(False))):
                    found.append(f"line {node.lineno}: {name}(...) without weights_only=True")
            if "allow_pickle" in keywords and not (isinstance(keywords["allow_pickle"], ast.Constant)
                                                   and keywords["allow_pickle"].value is False):
                found.append(f"line {node.lineno}: {name}(..., allow_pickle=...)")
    return found


def test_no_code_path_unpickles():
    offenders = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            uses = pickle_uses(path.read_text(encoding="utf-8"))
            if uses:
                offenders[str(path.relative_to(ROOT))] = uses
    assert offenders == {}


def test_the_check_catches_what_it_names():
    bad = ("import pickle\nimport dill\nfrom cloudpickle import loads\nimport torch\n"
           "torch.load(p)\ntorch.load(p, weights_only=False)\ntorch.serialization.load(p)\n"
           "np.load(p, allow_pickle=True)\n")
    assert len(pickle_uses(bad)) == 7
    good = ("import torch\nimport numpy as np\ntorch.load(p, weights_only=True)\nnp.load(p, allow_pickle=False)\n"
            "json.load(f)\nsafetensors.torch.load_file(p)\n")
    assert pickle_uses(good) == []
