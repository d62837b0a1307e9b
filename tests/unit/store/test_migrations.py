import duckdb
import pytest

from store import connect, transaction
from store.migrations import available, current_version, migrate


def test_fresh_store_reaches_latest_version(con):
    assert current_version(con) == len(available())
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"models", "corpora", "contexts", "activation_caches", "_migrations"} <= tables


def test_migrate_is_idempotent_and_forward_only(tmp_path):
    path = tmp_path / "s.duckdb"
    first = connect(path)
    first.execute("INSERT INTO models (name, n_layers, d_model) VALUES ('m', 2, 8)")
    first.close()
    again = connect(path)
    assert migrate(again) == len(available())
    assert again.execute("SELECT count(*) FROM _migrations").fetchone()[0] == len(available())
    assert again.execute("SELECT name FROM models").fetchall() == [("m",)]
    again.close()


def test_store_at_old_version_is_upgraded(tmp_path):
    path = tmp_path / "old.duckdb"
    raw = duckdb.connect(str(path))
    current_version(raw)  # creates _migrations, version 0
    number, name, sql = available()[0]
    raw.execute(sql)
    raw.execute("INSERT INTO _migrations (id, name) VALUES (?, ?)", [number, name])
    raw.close()
    con = connect(path)
    assert current_version(con) == len(available())
    con.close()


def test_migration_numbers_are_contiguous():
    numbers = [n for n, _, _ in available()]
    assert numbers == list(range(1, len(numbers) + 1))


def test_transaction_rolls_back_on_error(con):
    with pytest.raises(RuntimeError):
        with transaction(con):
            con.execute("INSERT INTO models (name, n_layers, d_model) VALUES ('x', 1, 1)")
            raise RuntimeError("boom")
    assert con.execute("SELECT count(*) FROM models").fetchone()[0] == 0


def test_read_only_connection_sees_data(tmp_path):
    path = tmp_path / "r.duckdb"
    writer = connect(path)
    writer.execute("INSERT INTO models (name, n_layers, d_model) VALUES ('m', 2, 8)")
    writer.close()
    reader = connect(path, read_only=True)
    assert reader.execute("SELECT d_model FROM models").fetchone() == (8,)
    with pytest.raises(duckdb.Error):
        reader.execute("INSERT INTO models (name, n_layers, d_model) VALUES ('n', 2, 8)")
    reader.close()
