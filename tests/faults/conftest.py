"""The fault-injection suite: every test here is slow (real CLI processes, killed at crash points)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fault_base(tmp_path_factory, tiny_model):
    """Root of the suite's base workspace (tests/fault_workspace.py); tests copy it, never change it."""
    from tests.fault_workspace import build_fault_workspace

    return build_fault_workspace(tmp_path_factory.mktemp("fault_base") / "ws", tiny_model)
