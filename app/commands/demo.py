"""`sparsescope demo`: the main job end to end on the embedded model and the built-in corpus."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import typer
from rich.text import Text

from app.commands.common import WorkspaceOpt, app, console, quiet, workspace

DEMO_MODEL = "smollm2-135m-instruct"
DEMO_HOOK = "blocks.6.hook_resid_post"
DEMO_TOKENS = 204_800
"""1,600 contexts of 128 tokens: the statistics (which leave out position 0 of each) cover 203,200 tokens."""
FVU_TARGET, L0_TARGET = 0.35, 64


@dataclass(frozen=True)
class DemoDictionary:
    name: str
    arch: str
    d_sae: int
    k: int
    passes: int
    """Training passes over the activation cache: the features settle over several (see the README's table)."""
    batch: int
    lr: float
    min_tokens: int = 0
    """Training tokens at least, whatever the cache's size (a small --tokens still trains enough steps)."""
    hook: str = DEMO_HOOK

    def train_tokens(self, cache_tokens: int) -> int:
        return max(self.passes * cache_tokens, self.min_tokens)


# On the demo's 204,800 cached tokens: 1,024,000 / 614,400 / 614,400 training tokens, about 4.5 minutes in all
# on 2 CPU cores (MP 3 min of it); FVU, CE recovered and dead share before and after: the README's demo table.
# Three more TopK dictionaries read the residual stream at other layers (for attribution across layers); their
# caches come from the same forward pass as layer 6's (it runs to layer 14 instead of 6).
DEMO_DICTIONARIES = (
    DemoDictionary("demo-topk", "topk", d_sae=4608, k=32, passes=5, batch=4096, lr=2e-3, min_tokens=300_000),
    DemoDictionary("demo-mp", "mp", d_sae=4608, k=32, passes=3, batch=2048, lr=3e-3, min_tokens=40_000),
    DemoDictionary("demo-codebook", "codebook", d_sae=4608, k=8, passes=3, batch=1024, lr=3e-3, min_tokens=30_000),
    *(DemoDictionary(f"demo-topk-l{layer}", "topk", d_sae=4608, k=32, passes=2, batch=4096, lr=2e-3,
                     min_tokens=300_000, hook=f"blocks.{layer}.hook_resid_post") for layer in (2, 10, 14)),
)
DEMO_HOOKS = tuple(dict.fromkeys(d.hook for d in DEMO_DICTIONARIES))
"""Every hook the demo caches (one forward pass), layer 6's first."""


DEMO_HEAD_TOKENS = 16_384
"""Corpus tokens of the head scan (every layer runs, with attention patterns: the slowest stage per token)."""
REPORT_TOP = 5


@app.command()
def demo(tokens: Annotated[int, typer.Option(help="Tokens for the activation cache and the feature analysis.")]
         = DEMO_TOKENS,
         head_tokens: Annotated[int, typer.Option(help="Corpus tokens for the head scores.")] = DEMO_HEAD_TOKENS,
         ws: WorkspaceOpt = None):
    """Run the main job on the embedded model: corpus -> activation caches (layers 2, 6, 10, 14, one pass) ->
    topk, mp and codebook dictionaries at layer 6 and topk at the other layers -> feature statistics -> head
    scores -> a Markdown report per dictionary. Then `sparsescope ui` shows it all.

    Everything already done is reused; a killed run resumes from its checkpoint.
    """
    from analysis.activations import build_caches
    from sae.models import load_model
    from store import InputError

    if tokens <= 0 or head_tokens <= 0:
        raise InputError(f"--tokens and --head-tokens must be positive (got {tokens}, {head_tokens})")
    space = workspace(ws)
    stages: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    console.rule(Text.assemble(("SparseScope demo", "bold"), f" in {space.root}"))
    lm = load_model(DEMO_MODEL)
    stages.append(("load the model", time.perf_counter() - t0))
    console.print(f"model {DEMO_MODEL} loaded ({stages[-1][1]:.0f} s)")
    t1 = time.perf_counter()
    caches = build_caches(space, None, lm, list(DEMO_HOOKS), "builtin", tokens, progress=not quiet())  # short sessions
    stages.append(("activation caches", time.perf_counter() - t1))
    for result in caches:
        if result.note:
            console.print(f"note: {result.note}", markup=False)
        m = result.manifest
        console.print(f"activation cache: {m.n_tokens:,} tokens at {m.hook} "
                      f"({'reused' if result.reused else f'{stages[-1][1]:.0f} s, one pass for every hook'})")
    paths = {r.manifest.hook: str(r.path) for r in caches}
    n = len(DEMO_DICTIONARIES)
    stages.append(_timed(f"train {n} dictionaries", _dictionaries, space, lm, paths, caches[0].manifest.n_tokens))
    stages.append(_timed(f"analyse {n} dictionaries", _analyses, space, lm, tokens))
    stages.append(_timed("head scores", _heads, space, lm, head_tokens))
    stages.append(_timed("reports", _reports, space))
    total = time.perf_counter() - t0
    console.print("stage times: " + ", ".join(f"{name} {sec:.0f} s" for name, sec in stages))
    console.print(Text.assemble(("demo done", "bold green"), f" in {total / 60:.1f} min. Browse it: ",
                                ("sparsescope ui", "bold"), " (or `make ui`)"))


def _timed(name: str, fn, *args) -> tuple[str, float]:
    t = time.perf_counter()
    fn(*args)
    return name, time.perf_counter() - t


def _analyses(space, lm, tokens: int) -> None:
    """Feature statistics of each demo dictionary on the demo tokens (reused when already there)."""
    from analysis.features.analyze import AnalyzeRequest, analyze_dictionary
    from store import session
    from store.corpora import corpus_fingerprint

    for d in DEMO_DICTIONARIES:
        with session(space.db_path) as con:
            done = con.execute("SELECT n_tokens FROM analyses WHERE dictionary = ? AND corpus = 'builtin' "
                               "AND corpus_fingerprint = ?", [d.name, corpus_fingerprint(con, "builtin")]).fetchone()
        if done and done[0] >= tokens * 0.9:  # position 0 of each context is left out
            console.print(Text.assemble((d.name, "bold"), f": feature statistics reused ({done[0]:,} tokens)"))
            continue
        out = analyze_dictionary(space, AnalyzeRequest(d.name, tokens=tokens), lm=lm, progress=not quiet())
        if out.note:
            console.print(f"note: {out.note}", markup=False)
        console.print(Text.assemble((d.name, "bold"), f": feature statistics on {out.n_tokens:,} tokens in "
                                    f"{out.seconds:.0f} s; {out.alive:,} of {out.d_sae:,} features fire"))


def _heads(space, lm, tokens: int) -> None:
    from analysis.heads.run import ensure_head_scan

    run, reused = ensure_head_scan(space.db_path, lm, "builtin", tokens, progress=not quiet())
    console.print(f"head scores: {run.n_layers} layers x {run.n_heads} heads on {run.n_tokens:,} tokens "
                  f"({'reused' if reused else 'computed'})")


def _reports(space) -> None:
    from analysis.reports import write_demo_report
    from store import session

    with session(space.db_path) as con:
        for d in DEMO_DICTIONARIES:
            path = write_demo_report(space, con, d.name, top=REPORT_TOP)
            console.print(f"report of the top {REPORT_TOP} features of {d.name}: {path}")


def _dictionaries(space, lm, caches: dict[str, str], cache_tokens: int) -> None:
    """Train (or reuse) the demo dictionaries and report each against the FVU / L0 targets."""
    from analysis.training import CHECKPOINT, TrainRequest, train_in_workspace
    from app.commands.dicts import summary
    from store import session
    from store.dictionaries import get_dictionary, get_metrics

    evals: dict = {}  # clean and zero-ablated model runs, shared by the dictionaries
    for d in DEMO_DICTIONARIES:
        with session(space.db_path) as con:
            done = get_dictionary(con, d.name) is not None
            metrics = get_metrics(con, d.name) if done else None
        t = time.perf_counter()
        if not done:
            resume = (space.named("checkpoints", d.name) / CHECKPOINT).is_file()
            request = TrainRequest(arch=d.arch, activations=caches[d.hook], name=d.name, d_sae=d.d_sae, k=d.k,
                                   tokens=d.train_tokens(cache_tokens), batch=d.batch, lr=d.lr, resume=resume,
                                   checkpoint_every=50)
            _, metrics = train_in_workspace(space, request, lm=lm, progress=not quiet(), evals=evals)
        verdict = ("meets", "") if metrics["fvu"] < FVU_TARGET and metrics["l0"] <= L0_TARGET else ("MISSES", "red")
        took = "reused" if done else f"{time.perf_counter() - t:.0f} s"
        console.print(Text.assemble((d.name, "bold"), f" ({took}): {summary(metrics)}; ", verdict,
                                    f" the target FVU < {FVU_TARGET}, L0 <= {L0_TARGET}"))
