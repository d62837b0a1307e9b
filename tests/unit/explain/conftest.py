"""Stores for the explain tests (the report store with a planted dictionary whose feature f fires on one token) and
the canned chat-completions server."""
import pytest


@pytest.fixture
def planted(con):
    """(connection, feature -> its token id) of a store with build_report_store and planted_dictionary."""
    from tests.factories import build_report_store, planted_dictionary

    build_report_store(con, n_features=8)
    return con, planted_dictionary(con)


@pytest.fixture
def planted50(con):
    """(connection, feature -> its token id) of the report store with a planted dictionary of 50 live features
    (feature 0 dead)."""
    from tests.factories import build_report_store, planted_dictionary

    build_report_store(con, n_features=8)
    return con, planted_dictionary(con, n_features=51)


@pytest.fixture
def chat_server():
    """Starts tests/chat_server.CannedChatServer(**faults) on a free local port; every one is closed after the
    test."""
    from tests.chat_server import CannedChatServer

    started = []

    def start(**faults):
        started.append(CannedChatServer(**faults).__enter__())
        return started[-1]

    yield start
    for server in started:
        server.__exit__(None, None, None)
