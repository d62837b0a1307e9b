"""`sparsescope`: the command-line interface. Errors print one `error:` line; exit 2 for bad input, 1 for ours."""
from __future__ import annotations

import sys

from app.commands import (  # noqa: F401  (each command module registers its commands on `app`)
    analyze,
    data,
    demo,
    dicts,
    explain,
    heads,
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


def main() -> None:
    bad = _undecodable(sys.argv[1:])
    if bad is not None:
        err_console.print(f"error: argument '{bad}' is not valid UTF-8 text; is the terminal's encoding UTF-8?",
                          markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    # SystemExit (--help, typer's usage errors) is no Exception: it passes through untouched
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("error: interrupted", markup=False)
        sys.exit(130)
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
