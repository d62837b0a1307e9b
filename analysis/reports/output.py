"""Writing report files without ever leaving a partial one behind, nor replacing what SparseScope did not write.

Each file is written to a temporary name in its target folder and renamed into place (os.replace is atomic
within one file system), so a failure or an interrupt leaves either the old file or none; temporary names
follow store.paths' staging pattern, so a killed run's leftovers go on the next write of the same target.
An existing file is replaced only with `force`, an existing folder only when it carries store.paths.MARKER.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from store.paths import check_output_file, check_output_folder, mark_output, staging_dir, staging_file, swap_folder


def check_out_path(out: str | Path, force: bool = False) -> Path:
    """The output path, checked before any work: its folder must exist and be writable; it is not a folder; it
    does not exist yet unless `force`."""
    return check_output_file(out, force)


def figures_folder(out: Path) -> Path:
    """Where a Markdown report OUT keeps its PNG figures: OUT_STEM_files beside it."""
    return out.parent / f"{out.stem}_files"


@contextlib.contextmanager
def temp_beside(out: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path in out's folder that replaces `out` when the block succeeds, and vanishes otherwise."""
    tmp_path = staging_file(out.parent, out.name, suffix)
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
def folder_beside(target: Path, force: bool = False) -> Iterator[Path]:
    """A temporary folder that becomes `target` when the block succeeds; an old target is replaced only with
    `force` and only when SparseScope wrote it (store.paths.MARKER, which the new folder carries too)."""
    check_output_folder(target, force)
    tmp = staging_dir(target.parent, target.name)
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the report folder is meant to be shared
        mark_output(tmp)
        swap_folder(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
