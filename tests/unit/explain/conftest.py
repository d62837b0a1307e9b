"""Stores for the explain tests: the report store with a planted dictionary whose feature f fires on one token."""
import pytest


@pytest.fixture
def planted(con):
    """(connection, feature -> its token id) of a store with build_report_store and planted_dictionary."""
    from tests.factories import build_report_store, planted_dictionary

    build_report_store(con, n_features=8)
    return con, planted_dictionary(con)
