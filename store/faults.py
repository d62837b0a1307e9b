"""Deterministic kill points for the fault-injection tests (tests/faults/): `crash_point("activations.shard")`.

A job calls `crash_point(NAME)` at the places where being killed matters (after a shard, after a training step,
right before and right after a commit). When the environment variable SPARSESCOPE_CRASH_AT names that point,
e.g. `SPARSESCOPE_CRASH_AT=activations.shard:2`, the process sends itself SIGKILL the 2nd time it passes there
(`:N` left out: the first time): no cleanup handler, `finally` block or atexit hook runs, exactly as when the
machine's OOM killer or a user's `kill -9` ends a job. The variable is read once, at import; when it is unset
a crash point is one comparison of a module global.

A leaf module (standard library only), so `sae` may import it as it imports `store.errors`.
"""
from __future__ import annotations

import os
import signal

ENV_VAR = "SPARSESCOPE_CRASH_AT"


def parse(value: str | None) -> tuple[str, int] | None:
    """(point name, how many passes kill) of the variable's value; None when unset or empty."""
    if not value:
        return None
    name, _, count = value.partition(":")
    if not name or (count and not count.isdigit()) or (count and int(count) < 1):
        raise ValueError(f"{ENV_VAR}={value!r}: expected NAME or NAME:N with N >= 1")
    return name, int(count or 1)


_TARGET = parse(os.environ.get(ENV_VAR))
_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process when SPARSESCOPE_CRASH_AT names `name` and this is the pass it counts to."""
    if _TARGET is None or _TARGET[0] != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == _TARGET[1]:
        os.kill(os.getpid(), signal.SIGKILL)
