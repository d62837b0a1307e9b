"""`sparsescope demo`: the main job end to end on the embedded model and the built-in corpus."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import typer

from app.cli_common import WorkspaceOpt, app, console, quiet, workspace

DEMO_MODEL = "smollm2-135m-instruct"
DEMO_HOOK = "blocks.6.hook_resid_post"
DEMO_TOKENS = 200_000
FVU_TARGET, L0_TARGET = 0.35, 64


@dataclass(frozen=True)
class DemoDictionary:
    name: str
    arch: str
    d_sae: int
    k: int
    tokens: int
    batch: int
    lr: float


# Sized so the three train in about six minutes on 2 CPU cores (measured: see the issue 8 report).
DEMO_DICTIONARIES = (
    DemoDictionary("demo-topk", "topk", d_sae=4608, k=32, tokens=300_000, batch=4096, lr=2e-3),
    DemoDictionary("demo-mp", "mp", d_sae=4608, k=32, tokens=40_000, batch=2048, lr=3e-3),
    DemoDictionary("demo-codebook", "codebook", d_sae=4608, k=8, tokens=30_000, batch=1024, lr=1e-3),
)


@app.command()
def demo(tokens: Annotated[int, typer.Option(help="Tokens for the activation cache.")] = DEMO_TOKENS,
         ws: WorkspaceOpt = None):
    """Run the main job on the embedded model: corpus -> activation cache -> topk, mp and codebook dictionaries.

    Everything already done is reused; a killed run resumes from its checkpoint.
    """
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
    _dictionaries(space, lm, str(result.path))
    console.print(f"demo done in {time.perf_counter() - t0:.0f} s. [yellow]Next stages[/] (feature analysis, "
                  "the web UI) are not part of the demo yet.")


def _dictionaries(space, lm, cache: str) -> None:
    """Train (or reuse) the demo dictionaries and report each against the FVU / L0 targets."""
    from analysis.dictionaries import TrainRequest, train_in_workspace
    from app.cmd_dicts import summary
    from store import session
    from store.dictionaries import get_dictionary, get_metrics

    evals: dict = {}  # clean and zero-ablated model runs, shared by the three dictionaries
    for d in DEMO_DICTIONARIES:
        with session(space.db_path) as con:
            done = get_dictionary(con, d.name) is not None
            metrics = get_metrics(con, d.name) if done else None
        t = time.perf_counter()
        if not done:
            resume = (space.root / "checkpoints" / d.name / "checkpoint.pt").is_file()
            request = TrainRequest(arch=d.arch, activations=cache, name=d.name, d_sae=d.d_sae, k=d.k,
                                   tokens=d.tokens, batch=d.batch, lr=d.lr, resume=resume, checkpoint_every=50)
            _, metrics = train_in_workspace(space, request, lm=lm, progress=not quiet(), evals=evals)
        verdict = "meets" if metrics["fvu"] < FVU_TARGET and metrics["l0"] <= L0_TARGET else "[red]MISSES[/]"
        took = "reused" if done else f"{time.perf_counter() - t:.0f} s"
        console.print(f"[bold]{d.name}[/] ({took}): {summary(metrics)}; {verdict} the target "
                      f"FVU < {FVU_TARGET}, L0 <= {L0_TARGET}")
