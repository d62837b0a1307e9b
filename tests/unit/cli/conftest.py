"""Workspaces for the CLI tests."""
import shutil

import pytest


@pytest.fixture(scope="session")
def explain_template(tmp_path_factory):
    """A workspace with the report store, the planted dictionary and `raw`, a dictionary never analysed."""
    from store import connect
    from store.dictionaries import DictionaryRow, add_dictionary
    from tests.factories import REPORT_MODEL, explained_workspace

    root = explained_workspace(tmp_path_factory.mktemp("explain") / "ws")
    con = connect(root / "sparsescope.duckdb")
    add_dictionary(con, DictionaryRow("raw", REPORT_MODEL, "blocks.1.hook_resid_post", "topk", 64, 48, 8,
                                      str(root / "dictionaries" / "raw")))
    con.close()
    return root


@pytest.fixture
def explain_ws(explain_template, tmp_path):
    """A fresh copy of explain_template."""
    return shutil.copytree(explain_template, tmp_path / "ws")
