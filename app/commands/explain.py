"""`sparsescope explain`: describe the features of an analysed dictionary in words and score the descriptions."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from app.commands.common import (
    WorkspaceOpt,
    app,
    console,
    err_console,
    existing_workspace,
    help_filled_by,
    quiet,
)


def registry_help() -> dict[str, str]:
    """Help of --explainer, --scorer and --batch from the registry (analysis/explain/registry.py) and the engine."""
    from analysis.explain.chat import ChatOptions
    from analysis.explain.registry import DEFAULT_EXPLAINER, EXPLAINERS, SCORERS
    from analysis.explain.run import BATCH

    twins = ", ".join(f"{n} means {s.text_twin}" for n, s in SCORERS.items() if s.text_twin)
    defaults = "; ".join(f"{n}: {','.join(e.scorers)}" for n, e in EXPLAINERS.items())
    llm = ", ".join(n for n, e in (*EXPLAINERS.items(), *SCORERS.items()) if e.llm)
    return {"explainer": "; ".join(f"{n}: {e.description}" for n, e in EXPLAINERS.items())
            + f" (default {DEFAULT_EXPLAINER}).",
            "scorer": "Comma-separated; " + "; ".join(f"{n}: {s.description}" for n, s in SCORERS.items())
            + f". For an explainer without rules {twins}. Default per explainer: {defaults}.",
            "endpoint": f"Base URL of an OpenAI-compatible chat API (llama.cpp server, vLLM, Ollama: e.g. "
                        f"http://127.0.0.1:8080/v1) for the language model of {llm}; nothing else is contacted "
                        f"(default: a local model).",
            "model": "With --endpoint: the model the server serves (required). Without: a local model name "
                     "(default: the embedded model).",
            "timeout": f"Seconds one endpoint call may take (default {ChatOptions.timeout:g}).",
            "batch": f"Features read, explained, scored and written together; a killed run keeps every finished "
                     f"batch (default {BATCH})."}


ExplainCommand = help_filled_by(registry_help)
"""`explain`, whose --explainer, --scorer and --batch help is read from the registry (numpy, DuckDB)."""


@app.command(name="explain", cls=ExplainCommand)
def explain_cmd(
    dictionary: Annotated[str, typer.Argument(help="An analysed dictionary (see `sparsescope dicts`).",
                                              show_default=False)],
    features: Annotated[Optional[str], typer.Option(help="Feature ids and ranges, e.g. 1,5,9-20 (default: every "
                                                         "feature that fires).", show_default=False)] = None,
    all_features: Annotated[bool, typer.Option("--all", help="Every feature that fires.")] = False,
    explainer: Annotated[Optional[str], typer.Option(help="(From the registry: ExplainCommand.)",
                                                     show_default=False)] = None,
    scorer: Annotated[Optional[str], typer.Option(help="(From the registry: ExplainCommand.)",
                                                  show_default=False)] = None,
    sample: Annotated[Optional[int], typer.Option(help="Explain N features drawn at random from those chosen.",
                                                  show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Seed of --sample, the non-activating examples and the baseline.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Explain and score again features done before.")] = False,
    batch: Annotated[Optional[int], typer.Option(help="(From the registry: ExplainCommand.)",
                                                 show_default=False)] = None,
    endpoint: Annotated[Optional[str], typer.Option(help="(From the registry: ExplainCommand.)",
                                                    show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option(help="(From the registry: ExplainCommand.)",
                                                 show_default=False)] = None,
    timeout: Annotated[Optional[float], typer.Option(help="(From the registry: ExplainCommand.)",
                                                     show_default=False)] = None,
    ws: WorkspaceOpt = None,
):
    """Explain features in words, score each explanation on held-out examples beside a baseline (another
    feature's explanation scored the same way), and store both. Resumable: a rerun skips features done before."""
    from analysis.explain import DEFAULT_EXPLAINER, ExplainRequest, parse_features, run_explain
    from store.errors import InputError

    if features is not None and all_features:
        raise InputError("give either --features or --all, not both")
    scorers = tuple(s.strip() for s in scorer.split(",")) if scorer is not None else None
    given = {"batch": batch, "timeout": timeout}
    req = ExplainRequest(dictionary, features=parse_features(features) if features is not None else None,
                         explainer=explainer or DEFAULT_EXPLAINER, scorers=scorers, sample=sample, seed=seed,
                         force=force, endpoint=endpoint, model=model,
                         **{k: v for k, v in given.items() if v is not None})
    req.check()
    result = run_explain(existing_workspace(ws).db_path, req, progress=not quiet())
    _print_result(result)


def _print_result(result) -> None:
    work = result.plan
    skipped = len(work.features) - len(work.todo)
    notes = [f"{skipped:,} done before" if skipped else "", f"{work.dead:,} never fire" if work.dead else "",
             f"{len(result.failed):,} failed" if result.failed else ""]
    notes = [n for n in notes if n]
    console.print(Text.assemble((result.dictionary, "bold"), f": {result.explained:,} of {len(work.features):,} "
                                f"features explained by {result.explainer} in {result.seconds:.1f} s",
                                f" ({'; '.join(notes)})" if notes else ""))
    if result.failed:
        err_console.print(f"note: failed features: {', '.join(map(str, result.failed[:20]))}", markup=False,
                          highlight=False, soft_wrap=True)
    table = Table(title="held-out scores; baseline: another feature's explanation", title_justify="left")
    for column in ("scorer", "metric", "features", "mean", "sd", "baseline mean"):
        table.add_column(column, justify="left" if column in ("scorer", "metric") else "right")
    for name, (metric, s) in result.summaries.items():
        table.add_row(name, metric, f"{s.n:,}", _num(s.mean), _num(s.std), _num(s.baseline_mean))
    console.print(table)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
