"""The progress channel of a job: the CLI's progress bars, also as JSON lines in $SPARSESCOPE_PROGRESS_FILE.

Every progress bar of SparseScope is a `tqdm.auto.tqdm`. When the variable is set, `sparsescope` (app/cli.py)
installs a subclass in its place before any command module imports it; each time a bar redraws (at most
every MIN_INTERVAL_S, and when it closes) it appends

    {"desc": "train topk", "n": 4096, "total": 65536, "unit": "tok", "elapsed": 3.2, "rate": 1280.0, "time": ...}

to the file. `read_last` gives the newest record, `eta` what is left. The bars on stderr are unchanged.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

ENV = "SPARSESCOPE_PROGRESS_FILE"
MIN_INTERVAL_S = 0.5
TAIL_BYTES = 4096


def install(path: str | os.PathLike) -> None:
    """Make every later `from tqdm.auto import tqdm` report to `path` as well."""
    import tqdm.auto

    base = tqdm.auto.tqdm
    if getattr(base, "_sparsescope_progress", None) is not None:
        return

    class ReportingTqdm(base):
        _sparsescope_progress = str(path)

        def display(self, msg=None, pos=None):
            shown = super().display(msg, pos)
            now = time.monotonic()
            last = getattr(self, "_reported_at", None)
            done = self.total is not None and self.n >= self.total
            if last is None or done or now - last >= MIN_INTERVAL_S:
                self._reported_at = now
                _append(self._sparsescope_progress, self.format_dict)
            return shown

    tqdm.auto.tqdm = ReportingTqdm


def _append(path: str, fmt: dict) -> None:
    elapsed = float(fmt.get("elapsed") or 0.0)
    n = fmt.get("n") or 0
    rate = fmt.get("rate") or (n / elapsed if elapsed else None)
    record = {"desc": str(fmt.get("prefix") or ""), "n": n, "total": fmt.get("total"), "unit": fmt.get("unit"),
              "elapsed": elapsed, "rate": rate, "time": time.time()}
    try:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
    except OSError:  # progress is a courtesy: a full disk must not stop the job
        pass


@dataclass(frozen=True)
class Progress:
    desc: str
    n: float
    total: float | None
    unit: str
    elapsed: float
    rate: float | None

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.n / self.total) if self.total else None

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate (None while unknown)."""
        if not self.total or not self.rate:
            return None
        return max(0.0, (self.total - self.n) / self.rate)

    def as_dict(self) -> dict:
        return {"desc": self.desc, "n": self.n, "total": self.total, "unit": self.unit, "elapsed": self.elapsed,
                "rate": self.rate}


def from_dict(record: dict) -> Progress | None:
    try:
        return Progress(str(record.get("desc", "")), float(record["n"]),
                        float(record["total"]) if record.get("total") else None, str(record.get("unit") or ""),
                        float(record.get("elapsed") or 0.0),
                        float(record["rate"]) if record.get("rate") else None)
    except (KeyError, TypeError, ValueError):
        return None


def read_last(path: str | os.PathLike) -> Progress | None:
    """The newest complete record of a progress file (None when there is none yet)."""
    try:
        with open(path, "rb") as src:
            src.seek(0, os.SEEK_END)
            size = src.tell()
            src.seek(max(0, size - TAIL_BYTES))
            lines = src.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:  # the first line of the window, cut, or a line being written
            continue
        if isinstance(record, dict):
            return from_dict(record)
    return None
