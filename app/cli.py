"""`sparsescope`: the command-line interface. Errors print one `error:` line; exit 2 for bad input, 1 for ours."""
from __future__ import annotations

import sys

from app.commands import (  # noqa: F401  (each command module registers its commands on `app`)
    analyze, data, demo, dicts, heads, report, steer, ui,
)
from app.commands.common import app, err_console


def main() -> None:
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
