"""The UI server process: import what the pages need, then hand over to `streamlit run` on app/ui/main.py.

Streamlit imports a page's modules during its first run, while the first visitor waits. Importing them here in
a background thread while the server starts (pandas, plotly, DuckDB and the store: seconds on a busy machine)
overlaps that cost with the server's own start-up and the browser loading the frontend, so the first page view
finds them imported (or waits only for the rest).

    python -m app.ui.serve [STREAMLIT OPTIONS]      (what `sparsescope ui` runs)
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path

MAIN = Path(__file__).resolve().parent / "main.py"


def warm_up() -> None:
    import pandas  # noqa: F401
    import plotly.express  # noqa: F401
    import plotly.graph_objects  # noqa: F401

    from app.ui import cache, widgets  # noqa: F401


def main(argv: list[str]) -> None:
    threading.Thread(target=warm_up, name="sparsescope-warm-up", daemon=True).start()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(MAIN), *argv]
    cli.main()


if __name__ == "__main__":
    main(sys.argv[1:])
