"""Reservations: an advisory lock on a file, held by this process until it lets go or dies.

    hold = reserve(ws.root / "checkpoints" / name / ".lock", f"dictionary {name!r}")   # InputError if taken
    ...
    hold.release()

`fcntl.flock` locks belong to the open file, and the kernel drops them when the process ends however it ends
(SIGKILL and OOM kills included), so a killed job never leaves a stale reservation to clean up. The file
holds the holder's pid, for the error message of whoever is refused. Reserving a path this process already
holds returns the same reservation (a job may plan twice); it is released when every holder released it.
"""
from __future__ import annotations

import os
from pathlib import Path

from store.errors import InputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; reservations are then best effort (never refused)
    fcntl = None

_held: dict[str, "Reservation"] = {}

DICTIONARY_LOCK = ".lock"
"""A dictionary name in training is reserved by WORKSPACE/checkpoints/NAME/.lock."""


class Reservation:
    def __init__(self, path: Path, fd: int | None):
        self.path, self.fd, self.count = path, fd, 1

    def release(self, remove: bool = False) -> None:
        """Let go (the last holder in this process closes the file); remove=True also deletes the lock file
        and its folder when that is left empty."""
        self.count -= 1
        if self.count > 0:
            return
        _held.pop(str(self.path), None)
        if remove:  # before closing: whoever locks the file next checks that it is still the file at `path`
            self.path.unlink(missing_ok=True)
            try:
                self.path.parent.rmdir()
            except OSError:
                pass
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def reserve(path: str | Path, what: str) -> Reservation:
    """Take the lock at `path` (created with its folder); InputError naming the holder's pid if another
    process holds it."""
    path = Path(path).absolute()
    held = _held.get(str(path))
    if held is not None:
        held.count += 1
        return held
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(fd)
            os.close(fd)
            raise InputError(f"{what} is in use by another process ({holder}); wait for it to finish or "
                             "choose another name") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its last holder deleted while we waited to open it
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _held[str(path)] = reservation = Reservation(path, fd)
    return reservation


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "pid unknown"


def release(path: str | Path, remove: bool = False) -> None:
    """Release this process' reservation of `path`, if it holds one."""
    held = _held.get(str(Path(path).absolute()))
    if held is not None:
        held.release(remove=remove)


def reserve_dictionary(ws, name: str) -> Reservation:
    """Reserve dictionary `name` of workspace `ws` for training (InputError naming the holder if taken; also
    for a name no folder may have). Cheap: `train` takes it before it imports torch, so a second run of a name
    in training is refused at once."""
    return reserve(ws.named("checkpoints", name) / DICTIONARY_LOCK, f"dictionary {name!r}")
