"""store.faults: a crash point kills the process on the pass the environment names, and costs nothing unset."""
import subprocess
import sys
import timeit
from pathlib import Path

import pytest

from store import faults

SCRIPT = ("from store.faults import crash_point\n"
          "for i in range(1, 5):\n"
          "    crash_point('demo.step')\n"
          "    print(i, flush=True)\n")


def _run(env_value: str | None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin"} | ({faults.ENV_VAR: env_value} if env_value is not None else {})
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60,
                          cwd=Path(faults.__file__).resolve().parents[1])


def test_the_named_pass_is_killed_by_sigkill():
    killed = _run("demo.step:3")
    assert killed.returncode == -9 and killed.stdout.split() == ["1", "2"]
    assert _run("demo.step").stdout.split() == []  # no count: the first pass
    untouched = _run("other.point:1")
    assert untouched.returncode == 0 and untouched.stdout.split() == ["1", "2", "3", "4"]
    assert _run(None).returncode == 0


def test_parse():
    assert faults.parse(None) is None and faults.parse("") is None
    assert faults.parse("train.step:12") == ("train.step", 12) and faults.parse("a.b") == ("a.b", 1)
    for bad in ("x:0", "x:-1", ":3", "x:y"):
        with pytest.raises(ValueError):
            faults.parse(bad)


def test_costs_nothing_when_unset(monkeypatch):
    monkeypatch.setattr(faults, "_TARGET", None)
    seconds = timeit.timeit(lambda: faults.crash_point("train.step"), number=100_000)
    assert seconds < 0.5  # well under a microsecond a call (a bare lambda call costs about as much)
