"""Shared fixtures: a seed, the tiny random model, an in-memory store, a temporary workspace."""
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
