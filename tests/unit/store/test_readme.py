"""store/README.md stays true: its tables match the migrated schema, and its example queries run on a store.

The queries run on the UI's demo-sized test store (tests/ui_store.py: real tiny-model activations), whose
dictionaries are named topk-demo and mp-demo where the README uses the names `sparsescope demo` gives.
"""
import re
from pathlib import Path

import duckdb
import pytest

from store import connect
from tests.ui_store import demo_workspace

README = Path(__file__).resolve().parents[3] / "store" / "README.md"
TEXT = README.read_text(encoding="utf-8")
QUERIES = re.findall(r"```sql\n(.*?)```", TEXT, re.S)
FIXTURE_NAMES = {"'demo-topk'": "'topk-demo'", "'demo-mp'": "'mp-demo'"}
"""README dictionary name -> the test store's name for a dictionary of the same architecture."""


def documented_schema(text: str) -> dict[str, dict[str, str]]:
    """table -> {column: type} from the README's `#### table` headings and `| `column` | TYPE | ... |` rows."""
    schema: dict[str, dict[str, str]] = {}
    table = None
    for line in text.splitlines():
        heading = re.match(r"#### (\w+)$", line)
        if heading:
            table = heading.group(1)
            schema[table] = {}
            continue
        row = re.match(r"\| `(\w+)` \| ([A-Z\[\]]+) \|", line)
        if row and table is not None:
            schema[table][row.group(1)] = row.group(2)
    return schema


def documented_columns(sql: str) -> list[str]:
    first = sql.splitlines()[0]
    assert first.startswith("-- columns: "), f"query does not start with its columns line: {first!r}"
    return [c.strip() for c in first.removeprefix("-- columns: ").split(",")]


def test_every_table_and_column_is_documented_with_its_type():
    con = connect(":memory:")
    rows = con.execute("SELECT table_name, column_name, data_type FROM information_schema.columns "
                       "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position").fetchall()
    actual: dict[str, dict[str, str]] = {}
    for table, column, dtype in rows:
        actual.setdefault(table, {})[column] = dtype
    assert len(actual) >= 20
    assert documented_schema(TEXT) == actual


def test_readme_has_the_example_queries_and_the_parquet_export():
    assert len(QUERIES) >= 3
    assert "sparsescope export-db --format parquet DIR" in TEXT
    assert 'duckdb -readonly workspace/sparsescope.duckdb' in TEXT


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    root = demo_workspace(tmp_path_factory.mktemp("store-readme") / "ws")
    con = duckdb.connect(str(root / "sparsescope.duckdb"), read_only=True)
    yield con
    con.close()


@pytest.mark.parametrize("sql", QUERIES, ids=[f"query{i}" for i in range(len(QUERIES))])
def test_example_query_returns_rows_with_its_documented_columns(demo_store, sql):
    for readme_name, fixture_name in FIXTURE_NAMES.items():
        sql = sql.replace(readme_name, fixture_name)
    result = demo_store.sql(sql)
    assert result.columns == documented_columns(sql)
    rows = result.fetchall()
    assert rows, "the example query returned no rows on the demo store"
    assert all(value is not None for value in rows[0][:2])  # keys of the first row are filled
