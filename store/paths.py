"""Paths SparseScope writes to: names confined to their folder, durable small files, staging, output targets.

    folder = confined(ws.root / "dictionaries", name, "dictionary", root=ws.root)  # Workspace.named wraps it
    write_durable(folder / "manifest.json", text)       # temp, fsync, rename, fsync the folder
    tmp = staging_dir(parent, "import")                 # .import.partial-PID@HOST-XXXX, swept once PID is gone

Every staging entry is named `.BASE.partial-PID@HOST-RANDOM[.ext]`: a run removes the leftovers of killed runs
(made on this host by a PID that no longer exists) before it stages anything, and never touches a name outside
that pattern nor one another host made (a workspace on a shared disk: that PID means nothing here).
Folders SparseScope writes whole (exports, figure folders) carry MARKER, so `--force` only ever replaces a
folder SparseScope wrote. A leaf module (it imports only store.errors): the engine (`sae`) uses it too.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

from store.errors import InputError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_STAGING = re.compile(r"^\.(?P<base>.+)\.partial-(?P<pid>\d+)@(?P<host>[A-Za-z0-9.]+)-[A-Za-z0-9_]+"
                      r"(?:\.[A-Za-z0-9]+)?$")
HOST = re.sub(r"[^A-Za-z0-9.]", "", socket.gethostname())[:64] or "localhost"
"""This machine in staging names (letters, digits and dots only, so the name parses back)."""
MARKER = ".sparsescope-output"
"""File in a folder SparseScope wrote whole; `--force` replaces only folders that carry it."""


def check_name(name: str, what: str = "dictionary") -> None:
    """Names become folder names: letters, digits, '_', '-', '.', at most 128, starting with a letter or digit."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(f"{what} name {name!r} must start with a letter or digit and use only letters, "
                         "digits, '_', '-' or '.' (at most 128)")


def confined(folder: str | os.PathLike, name: str, what: str = "dictionary", suffix: str = "",
             root: str | os.PathLike | None = None) -> Path:
    """FOLDER/NAME+SUFFIX for a name that passes check_name, proven to stay put once symlinks are resolved.

    The entry must be a direct child of the folder (not a link leading elsewhere) and lie inside `root`
    (default: the folder itself); InputError (one line) otherwise.
    """
    check_name(name, what)
    folder = Path(folder)
    path = folder / f"{name}{suffix}"
    real, base = path.resolve(), Path(root if root is not None else folder).resolve()
    if real != folder.resolve() / path.name or not real.is_relative_to(base):
        raise InputError(f"{what} {name!r} leads to {real}, outside {base}; refusing to use it")
    return path


def refuse_symlinks(folder: str | os.PathLike, what: str) -> None:
    """InputError when anything inside `folder` is a symbolic link (it could lead out of the folder)."""
    for parent, dirs, files in os.walk(folder):
        for entry in (*dirs, *files):
            if os.path.islink(os.path.join(parent, entry)):
                rel = os.path.relpath(os.path.join(parent, entry), folder)
                raise InputError(f"{what} {folder} contains a symbolic link ({rel}); refusing to read it")


# ---------------------------------------------------------------------------------------------- durable files

def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in `folder` survive a power cut (no-op where folders cannot be opened, e.g. Windows)."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: str | os.PathLike, text: str) -> None:
    """Write a small file so that a crash leaves the old or the new one: temp file, fsync, rename, fsync folder."""
    path = Path(path)
    tmp = staging_file(path.parent, path.name)
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


# ---------------------------------------------------------------------------------------------- staging

def _prefix(base: str) -> str:
    return f".{base}.partial-{os.getpid()}@{HOST}-"


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # Windows' os.kill(pid, 0) would send CTRL_C: never sweep there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def sweep_staging(parent: str | os.PathLike, base: str | None = None) -> list[Path]:
    """Remove what killed runs left in `parent`: entries `.BASE.partial-PID@HOST-...` whose process is gone.

    `base` limits the sweep to one target's staging (use it in folders that are not the workspace's own).
    Links are never followed nor removed. Returns what was removed.
    """
    parent, removed = Path(parent), []
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        match = _STAGING.match(entry.name)
        if not match or (base is not None and match["base"] != base) or entry.is_symlink() \
                or match["host"] != HOST:
            continue
        if _alive(int(match["pid"])):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def staging_dir(parent: str | os.PathLike, base: str) -> Path:
    """A new private folder `.BASE.partial-PID@HOST-XXXX` in `parent`, after sweeping BASE's dead leftovers."""
    sweep_staging(parent, base)
    return Path(tempfile.mkdtemp(prefix=_prefix(base), dir=parent))


def staging_file(parent: str | os.PathLike, base: str, suffix: str = "") -> Path:
    """A new empty file `.BASE.partial-PID@HOST-XXXX[SUFFIX]` in `parent`, after sweeping BASE's dead leftovers."""
    sweep_staging(parent, base)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(base), suffix=suffix, dir=parent)
    os.close(fd)
    return Path(tmp)


def swap_folder(staging: Path, target: Path) -> None:
    """Rename the finished folder `staging` to `target`; an existing target (that the caller checked may go)
    is moved aside first and removed after, so a reader sees the old folder or the new one."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise InputError(f"{target} is not a folder SparseScope can replace")
    if target.exists() and any(target.iterdir()):
        old = target.with_name(_prefix(target.name) + "old")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)
    fsync_dir(target.parent)


# ---------------------------------------------------------------------------------------------- output targets

def _check_parent(path: Path, make_parent: bool = False) -> None:
    parent = path.parent
    while make_parent and not parent.exists() and parent != parent.parent:  # the folder the caller will create
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output folder {parent} is not writable")


def check_output_file(path: str | os.PathLike, force: bool = False, make_parent: bool = False) -> Path:
    """An output file path, checked before any work: not a folder, its folder exists (or, with `make_parent`, can
    be created) and is writable, and it is new unless `force` (then it is replaced, never a folder)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(f"output path {path} is a folder; give a file name")
    _check_parent(path, make_parent)
    if (path.exists() or path.is_symlink()) and not force:
        raise InputError(f"output file {path} already exists; pass --force to replace it")
    return path


def check_output_folder(path: str | os.PathLike, force: bool = False) -> Path:
    """A folder SparseScope writes whole: new or empty, or (with `force`) one SparseScope wrote (it has MARKER)."""
    path = Path(path).expanduser().absolute()
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise InputError(f"output folder {path} exists and is not a folder; pick a new folder")
    if path.is_dir() and any(path.iterdir()):
        if not force:
            raise InputError(f"output folder {path} exists and is not empty; pick a new folder or pass --force")
        if not (path / MARKER).is_file():
            raise InputError(f"output folder {path} exists and was not written by SparseScope (no {MARKER}); "
                             "refusing to replace it")
    _check_parent(path)
    return path


def mark_output(folder: Path) -> None:
    """Write MARKER into a folder SparseScope is about to publish whole."""
    (folder / MARKER).write_text("written by SparseScope; `--force` may replace this folder\n", encoding="utf-8")
