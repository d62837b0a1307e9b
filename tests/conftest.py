"""Shared fixtures: a seed, one torch thread, the tiny random model, an in-memory store, a temporary workspace."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("SPARSESCOPE_QUIET", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def seed() -> int:
    torch.manual_seed(0)
    return 0


@pytest.fixture
def one_thread():
    """Tiny matmuls: one thread avoids OpenMP sync that makes a busy machine many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model():
    from sae.models import load_model

    return load_model("tiny-random", device="cpu")


@pytest.fixture
def con():
    from store import connect

    connection = connect(":memory:")
    yield connection
    connection.close()


@pytest.fixture
def ws(tmp_path):
    from store import Workspace

    return Workspace.resolve(tmp_path / "ws")


@pytest.fixture
def search_ws(ws):
    """A workspace with tiny-random dictionaries on three hooks, one of them analysed and labelled
    (tests/factories.py search_workspace)."""
    from tests.factories import search_workspace

    search_workspace(ws)
    return ws
