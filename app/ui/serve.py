"""The UI server process: warm up what the first page view needs, then hand over to `streamlit run` on app/ui/main.py.

The first script run after start-up pays one-off costs while the first visitor waits: importing pandas, plotly,
DuckDB and the store; plotly building its first figure (its validators load lazily: ~0.5 s); and Streamlit's one-off
`inspect.stack()` on the first element (~0.3 s: `inspect.getmodule` walks every loaded module once). `main` imports
pandas and Streamlit, then `warm_up` pays the rest in a background thread while the server starts and the browser
loads the frontend. On the demo store (2 cores) the first Home run took 1.3 s with only the imports warmed and 0.6 s
with this warm-up (0.25 s since Home draws its chart only on its tab; later runs 0.1-0.2 s); bench/ui_first_view.py
times the whole first view in a browser.

    python app/ui/serve.py [STREAMLIT OPTIONS]      (what `sparsescope ui` runs, see app/commands/ui.py)
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

MAIN = Path(__file__).resolve().parent / "main.py"
RUNTIME_WAIT_S = 60.0


def warm_libraries() -> None:
    """Import DuckDB, then build and serialise small figures like the pages' (loads plotly's lazy validators)."""
    import duckdb  # noqa: F401
    import pandas as pd
    import plotly.express as px
    import plotly.graph_objects as go
    import plotly.io as pio
    import pyarrow as pa

    df = pd.DataFrame({"x": [1.0, 2.0], "y": [0.1, 0.2], "arch": ["a", "b"], "name": ["p", "q"], "z": [3, 4]})
    fig = px.scatter(df, x="x", y="y", color="arch", hover_name="name", text="name",
                     hover_data={"z": ":.3f", "arch": False}, title="t")
    fig.update_traces(marker={"size": 12}, textposition="top center")
    pio.to_json(fig, validate=False)
    bars = go.Figure(go.Bar(x=[0.0, 1.0], y=[1, 2]))
    bars.update_layout(xaxis_title="x", yaxis_title="y", height=200)
    pio.to_json(bars, validate=False)
    pa.Table.from_pandas(df)  # what st.dataframe does with a frame


def warm_app() -> None:
    """Import the app's own modules (they declare Streamlit caches: call once the runtime exists)."""
    import inspect

    from app.ui.data import cache  # noqa: F401
    from app.ui.widgets import common  # noqa: F401

    # Streamlit calls inspect.stack() once, on the first element a script draws; inspect.getmodule caches the file
    # of every module it has seen, so walking the stack here leaves that call only the modules loaded since.
    inspect.stack()


def warm_up() -> None:
    warm_libraries()
    from streamlit import runtime

    # st.cache_data logs a warning for every cached function declared before the runtime exists
    deadline = time.monotonic() + RUNTIME_WAIT_S
    while not runtime.exists():
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)
    warm_app()


def main(argv: list[str]) -> None:
    # Imported here, before the warm-up thread starts: importing Streamlit builds its plotly theme, and plotly asks
    # sys.modules whether pandas is loaded; a pandas import half-done in another thread then crashes the server.
    import pandas  # noqa: F401
    from streamlit.web import cli

    threading.Thread(target=warm_up, name="sparsescope-warm-up", daemon=True).start()

    sys.argv = ["streamlit", "run", str(MAIN), *argv]
    cli.main()


if __name__ == "__main__":
    main(sys.argv[1:])
