"""`sparsescope`: the command-line interface. Errors print one `error:` line; exit 2 for bad input, 1 for ours."""
from __future__ import annotations

import sys

from app import cmd_data, cmd_demo, cmd_dicts  # noqa: F401  (commands register themselves on `app`)
from app import cmd_steer  # noqa: F401  (steer)
from app import cmd_ui  # noqa: F401
from app import cmd_report  # noqa: F401  (report, import-report, export-neuronpedia, export-db, import-db)
from app import cmd_heads  # noqa: F401  (heads, head-pattern, head-ablate, head-rank, heads-export)
from app import cmd_analyze  # noqa: F401  (analyze, codes)
from app.cli_common import app, err_console


INPUT_ERRORS = (("store.errors", "InputError"), ("sae.errors", "InputError"))
"""Bad-input error classes, by module: looked up only once something was raised (see _input_errors)."""


def _input_errors() -> tuple[type[BaseException], ...]:
    # an error class whose module was never imported cannot have been raised; importing sae.errors here
    # would import the sae package and torch (seconds) on every exit, `--help` included
    found = [getattr(sys.modules[m], name) for m, name in INPUT_ERRORS if m in sys.modules]
    return (*found, FileNotFoundError)


def main() -> None:
    # SystemExit (--help, typer's usage errors) is no Exception: it passes through untouched
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("error: interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the one place an exception becomes one line
        if isinstance(exc, _input_errors()):
            err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            sys.exit(2)
        err_console.print(f"error: internal failure: {exc.__class__.__name__}: {exc}", markup=False,
                          highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
