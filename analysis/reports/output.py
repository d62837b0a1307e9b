"""Writing report files without ever leaving a partial one behind.

Each file is written to a temporary name in its target folder and renamed into place (os.replace is atomic
within one file system), so a failure or an interrupt leaves either the old file or none.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from store.errors import InputError


def check_out_path(out: str | Path) -> Path:
    """The output path, checked before any work: its folder must exist and be writable; it is not a folder."""
    path = Path(out).expanduser()
    if path.is_dir():
        raise InputError(f"output path {path} is a folder; give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise InputError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"output folder {folder} is not writable")
    return path


@contextlib.contextmanager
def temp_beside(out: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path in out's folder that replaces `out` when the block succeeds, and vanishes otherwise."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=suffix + ".partial", dir=out.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, out)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_atomic(out: Path, data: str | bytes) -> None:
    with temp_beside(out) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)


@contextlib.contextmanager
def folder_beside(target: Path) -> Iterator[Path]:
    """A temporary folder that becomes `target` (replacing an old one) when the block succeeds."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the report folder is meant to be shared
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
