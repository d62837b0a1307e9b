"""Workspaces for the job runner's tests: the fault suite's tiny workspace (a corpus, an activation cache, a
trained dictionary on the tiny model), built once, copied per test."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def jobs_base(tmp_path_factory, tiny_model):
    from tests.fault_workspace import build_fault_workspace

    return build_fault_workspace(tmp_path_factory.mktemp("jobs_base") / "ws", tiny_model)


@pytest.fixture
def jobs_ws(jobs_base, tmp_path):
    from store import Workspace
    from tests.helpers import copy_workspace

    return Workspace.resolve(copy_workspace(jobs_base, tmp_path / "ws"))
