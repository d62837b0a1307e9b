"""Commands for feature statistics: analyze (one pass into the store) and codes (codebook code search)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from app.commands.common import DeviceOpt, WorkspaceOpt, app, console, err_console, existing_workspace, quiet

DictArg = Annotated[str, typer.Argument(help="Dictionary name (see `sparsescope dicts`).", show_default=False)]
CorpusOpt = Annotated[str, typer.Option(help="Corpus to read (`builtin` is created on first use).")]
TokensOpt = Annotated[int, typer.Option(help="Corpus tokens to read (whole contexts, at most the corpus).")]
BatchOpt = Annotated[int, typer.Option(help="Contexts encoded at a time.")]


@app.command(name="analyze")
def analyze_cmd(
    dictionary: DictArg,
    corpus: CorpusOpt = "builtin",
    tokens: TokensOpt = 200_000,
    examples: Annotated[int, typer.Option(help="Top activating examples per feature, and samples per "
                                               "quantile band.")] = 20,
    quantiles: Annotated[int, typer.Option(help="Activation bands sampled per feature.")] = 10,
    batch: BatchOpt = 16,
    residual_threshold: Annotated[Optional[float], typer.Option(
        help="MP dictionaries: analyse in adaptive mode, each token's pursuit stopping once its residual norm "
             "(raw activation units) falls below this or an atom repeats, at most its k steps.",
        show_default=False)] = None,
    device: DeviceOpt = None,
    ws: WorkspaceOpt = None,
):
    """Compute every feature's statistics in one pass over a corpus and store them (a rerun replaces them).

    Density, mean/max activation, histogram, top and quantile-band examples, promoted/suppressed tokens,
    decoder neighbours, co-occurring features, and for MP dictionaries the pursuit steps and parents. Reads the
    activation cache when one covers the corpus, else runs the model up to the dictionary's hook. Under
    `torchrun --nproc_per_node N -m app.cli analyze ...` each process reads a share of the contexts and the
    first one writes the merged results.
    """
    from analysis.features.analyze import AnalyzeRequest, analyze_dictionary

    req = AnalyzeRequest(dictionary, corpus=corpus, tokens=tokens, examples=examples, quantiles=quantiles,
                         batch=batch, device=device, residual_threshold=residual_threshold)
    req.check()
    out = analyze_dictionary(existing_workspace(ws), req, progress=not quiet())
    if out is None:  # a torchrun rank other than 0: rank 0 wrote and reports
        return
    if out.note:
        err_console.print(f"note: {out.note}", markup=False, highlight=False, soft_wrap=True)
    console.print(Text.assemble((out.dictionary, "bold"), f" analysed on {out.n_tokens:,} tokens of {out.corpus} "
                                f"(from {out.source}) in {out.seconds:.0f} s: {out.alive:,} of {out.d_sae:,} "
                                "features fire"))


@app.command(name="codes")
def codes_cmd(
    dictionary: DictArg,
    regex: Annotated[str, typer.Argument(help="Regular expression over the token text (Python `re`).",
                                         show_default=False)],
    corpus: CorpusOpt = "builtin",
    tokens: TokensOpt = 100_000,
    top: Annotated[int, typer.Option(help="Codes listed.")] = 20,
    batch: BatchOpt = 16,
    device: DeviceOpt = None,
    ws: WorkspaceOpt = None,
):
    """Codes of a codebook dictionary that fire where the token matches REGEX, by precision (with recall)."""
    from analysis.features.analyze import AnalyzeRequest, search_codes
    from store import InputError

    if top < 1:
        raise InputError(f"--top must be at least 1 (got {top})")
    req = AnalyzeRequest(dictionary, corpus=corpus, tokens=tokens, batch=batch, device=device)
    matches = search_codes(existing_workspace(ws), req, regex, limit=top, progress=not quiet())
    if not matches:
        console.print(f"no code fires on tokens matching {regex!r} (or no token matches it)")
        return
    table = Table(title=f"{dictionary}: codes for /{regex}/")
    for col in ("code", "precision", "recall", "positions"):
        table.add_column(col, justify="right")
    for m in matches:
        table.add_row(str(m.code), f"{m.precision:.3f}", f"{m.recall:.3f}", f"{m.n_active:,}")
    console.print(table)
