"""`sparsescope`: the command-line interface. Errors print one `error:` line; exit 2 for bad input, 1 for ours."""
from __future__ import annotations

import sys

from app import cmd_data, cmd_demo, cmd_dicts  # noqa: F401  (commands register themselves on `app`)
from app import cmd_steer  # noqa: F401  (steer)
from app import cmd_ui  # noqa: F401
from app import cmd_report  # noqa: F401  (report, import-report, export-neuronpedia, export-db, import-db)
from app import cmd_heads  # noqa: F401  (heads, head-pattern, head-ablate, head-rank, heads-export)
from app.cli_common import app, err_console


def _input_errors() -> tuple[type[BaseException], ...]:
    from sae.errors import InputError as EngineInputError
    from store.errors import InputError as StoreInputError

    return (EngineInputError, StoreInputError, FileNotFoundError)


def main() -> None:
    try:
        app()
    except _input_errors() as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("error: interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the one place a failure of ours becomes one line
        err_console.print(f"error: internal failure: {exc.__class__.__name__}: {exc}", markup=False,
                          highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
