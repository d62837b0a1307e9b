"""Fixtures of the steering tests: tiny-random dictionaries of every steerable kind on one hook."""
from __future__ import annotations

import pytest

from tests.factories import TINY_HOOK, steer_dictionary


@pytest.fixture(scope="module")
def dicts(tmp_path_factory):
    """topk, relu, mp and codebook SteerDictionaries at blocks.0.hook_resid_post, each named after its
    architecture (features 0..127)."""
    tmp = tmp_path_factory.mktemp("steer_dicts")
    return {arch: steer_dictionary(tmp, arch, hook=TINY_HOOK) for arch in ("topk", "relu", "mp", "codebook")}
