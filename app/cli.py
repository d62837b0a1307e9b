"""`sparsescope`: the command-line interface. Errors print one `error:` line; exit 2 for bad input, 1 for ours."""
from __future__ import annotations

import os
import sys

from app.commands import (  # noqa: F401  (each command module registers its commands on `app`)
    analyze,
    attribute,
    data,
    demo,
    dicts,
    eval_task,
    explain,
    heads,
    neurons,
    report,
    search,
    steer,
    ui,
)
from app.commands.common import app, err_console


def _undecodable(args: list[str]) -> str | None:
    """The first argument with bytes that are not UTF-8 (Python keeps them as surrogates, which no tokenizer,
    store or terminal can encode), shown with escapes; None when every argument is text."""
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return arg.encode("utf-8", "backslashreplace").decode("utf-8")
    return None


def _interrupt_of(exc: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt behind an exit, if any (typer raises Exit(130) from it)."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _say_interrupted(exc: KeyboardInterrupt) -> None:
    """One line; the interrupted command may say what it kept (`train`: its checkpoint)."""
    err_console.print(f"error: interrupted{f': {exc}' if str(exc) else ''}", markup=False, highlight=False,
                      soft_wrap=True)


def main() -> None:
    bad = _undecodable(sys.argv[1:])
    if bad is not None:
        err_console.print(f"error: argument '{bad}' is not valid UTF-8 text; is the terminal's encoding UTF-8?",
                          markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    if os.environ.get("SPARSESCOPE_PROGRESS_FILE"):  # a job of the UI's Jobs page: progress as JSON lines too
        from app.jobs.progress import install

        install(os.environ["SPARSESCOPE_PROGRESS_FILE"])
    # SystemExit (--help, typer's usage errors) is no Exception: it passes through untouched
    try:
        app()
    except KeyboardInterrupt as exc:  # Ctrl+C, or a cancel from the Jobs page; the job may say what it kept
        _say_interrupted(exc)
        sys.exit(130)
    except SystemExit as exc:  # typer turns KeyboardInterrupt into a silent exit 130
        stop = _interrupt_of(exc)
        if stop is not None:
            _say_interrupted(stop)
        raise
    except Exception as exc:  # noqa: BLE001 - the one place an exception becomes one line
        from store.errors import InputError  # here, not at the top: `--help` needs no store module

        if isinstance(exc, (InputError, FileNotFoundError)):
            err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            sys.exit(2)
        err_console.print(f"error: internal failure: {exc.__class__.__name__}: {exc}", markup=False,
                          highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
