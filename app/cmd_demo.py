"""`sparsescope demo`: the main job end to end on the embedded model and the built-in corpus."""
from __future__ import annotations

import time
from typing import Annotated

import typer

from app.cli_common import WorkspaceOpt, app, console, quiet, workspace

DEMO_MODEL = "smollm2-135m-instruct"
DEMO_HOOK = "blocks.6.hook_resid_post"
DEMO_TOKENS = 200_000


@app.command()
def demo(tokens: Annotated[int, typer.Option(help="Tokens for the activation cache.")] = DEMO_TOKENS,
         ws: WorkspaceOpt = None):
    """Run the main job on the embedded model: corpus -> activation cache (reused when present)."""
    from analysis.activations import build_cache
    from sae.models import load_model
    from store import session

    space = workspace(ws)
    t0 = time.perf_counter()
    console.rule(f"[bold]SparseScope demo[/] in {space.root}")
    lm = load_model(DEMO_MODEL)
    console.print(f"model {DEMO_MODEL} loaded ({time.perf_counter() - t0:.0f} s)")
    with session(space.db_path) as con:
        t1 = time.perf_counter()
        result = build_cache(space, con, lm, DEMO_HOOK, "builtin", tokens, progress=not quiet())
    m = result.manifest
    console.print(f"activation cache: {m.n_tokens:,} tokens at {m.hook} "
                  f"({'reused' if result.reused else f'{time.perf_counter() - t1:.0f} s'})")
    console.print("[yellow]The demo stops here for now:[/] training dictionaries, feature analysis and the "
                  "web UI are not built yet.")
