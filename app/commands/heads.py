"""Commands for attention heads: scores over a corpus, a head's pattern, ablation, ranking, activation patching,
Parquet export."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from app.commands.common import DeviceOpt, ForceOpt, WorkspaceOpt, app, console, existing_workspace, quiet, workspace

ModelOpt = Annotated[str, typer.Option(help="Model name.")]
PromptOpt = Annotated[str, typer.Option(help="Text to run the model on.")]
LayerOpt = Annotated[int, typer.Option(help="Layer (0-based).")]
HeadOpt = Annotated[int, typer.Option(help="Head within the layer (0-based; query head under GQA).")]
DEFAULT_MODEL = "smollm2-135m-instruct"


@app.command(name="heads")
def heads_cmd(
    model: ModelOpt = DEFAULT_MODEL,
    corpus: Annotated[str, typer.Option(help="Corpus name (`builtin` is created on first use).")] = "builtin",
    tokens: Annotated[int, typer.Option(help="Corpus tokens to scan.")] = 65_536,
    batch: Annotated[int, typer.Option(help="Contexts per forward pass.")] = 8,
    top: Annotated[int, typer.Option(help="Heads listed per score in the summary.")] = 3,
    device: DeviceOpt = None,
    ws: WorkspaceOpt = None,
):
    """Score every attention head on a corpus (previous-token, induction, duplicate, first-token, self,
    entropy, distance) and store the scores, top-attending contexts and mean head outputs (a rerun replaces)."""
    from analysis.heads.run import load_scan_input, save_scan
    from analysis.heads.scan import HeadScanConfig, scan_heads
    from sae.models import load_model
    from store import InputError, session

    if tokens <= 0 or batch <= 0 or top <= 0:
        raise InputError(f"--tokens, --batch and --top must be positive (got {tokens}, {batch}, {top})")
    space = workspace(ws)
    lm = load_model(model, device=device)
    with session(space.db_path) as con:  # read, then let go of the write lock while the model runs
        data = load_scan_input(con, lm, corpus, tokens)
    result = scan_heads(lm, data.tokens, data.context_ids, HeadScanConfig(tokens=tokens, batch=batch),
                        progress=not quiet())
    with session(space.db_path) as con:
        run = save_scan(con, result, data.corpus.name, data.fingerprint)
        console.print(Text.assemble(f"head scores of {run.n_layers} layers x {run.n_heads} heads ({run.n_kv_heads} "
                                    f"KV groups) on {run.n_tokens:,} tokens of ", (run.corpus, "bold"), " stored"))
        console.print(_summary(con, run.model, run.corpus, top))


def _summary(con, model: str, corpus: str, top: int) -> Table:
    from analysis.heads.scores import SCORES
    from store.heads import top_heads

    table = Table("score", "top heads (layer.head = value)", "definition")
    for score, meaning in SCORES.items():
        lowest = score == "entropy"  # the most focused heads are the interesting ones
        heads = top_heads(con, model, corpus, score, top, descending=not lowest)
        cells = ", ".join(f"{layer}.{head} = {value:.3f}" for layer, head, value in heads)
        table.add_row(score + (" (lowest)" if lowest else ""), cells, meaning)
    return table


@app.command(name="head-pattern")
def head_pattern_cmd(layer: LayerOpt, head: HeadOpt, prompt: PromptOpt, model: ModelOpt = DEFAULT_MODEL,
                     last: Annotated[int, typer.Option(help="Destinations shown (the last N).")] = 20,
                     k: Annotated[int, typer.Option(help="Sources shown per destination.")] = 3,
                     device: DeviceOpt = None, ws: WorkspaceOpt = None):
    """Print a head's attention on a prompt: for each destination token, its strongest sources."""
    from analysis.heads.prompt import head_pattern, top_sources
    from sae.models import load_model

    lm = load_model(model, device=device)
    result = head_pattern(lm, prompt, layer, head)
    table = Table("dest", "token", *[f"source {i + 1} (weight)" for i in range(k)],
                  title=f"head {layer}.{head} (KV group {result.kv_group}) on {len(result.tokens)} tokens")
    start = max(0, len(result.tokens) - last)
    for dest, sources in list(enumerate(top_sources(result.pattern, k)))[start:]:
        cells = [f"{src} {result.tokens[src]!r} ({w:.2f})" for src, w in sources]
        table.add_row(str(dest), repr(result.tokens[dest]), *cells, *[""] * (k - len(cells)))
    console.print(table)


@app.command(name="head-ablate")
def head_ablate_cmd(layer: LayerOpt, head: HeadOpt, prompt: PromptOpt, model: ModelOpt = DEFAULT_MODEL,
                    mode: Annotated[str, typer.Option(help="zero, mean or path (direct path to the logits).")] = "zero",
                    corpus: Annotated[str, typer.Option(help="Corpus of the head means (mode mean).")] = "builtin",
                    device: DeviceOpt = None, ws: WorkspaceOpt = None):
    """Ablate one head on a prompt: change in loss and in the top next-token predictions."""
    from analysis.heads.ablation import MODES, ablate_head
    from analysis.heads.prompt import check_head
    from analysis.heads.run import load_head_means
    from sae.models import load_model
    from store import InputError, session

    if mode not in MODES:  # before the model loads
        raise InputError(f"unknown ablation mode {mode!r} (use one of {', '.join(MODES)})")
    lm = load_model(model, device=device)
    check_head(lm, layer, head)
    means = None
    if mode == "mean":
        with session(existing_workspace(ws).db_path) as con:
            means = load_head_means(con, lm, corpus)
    result = ablate_head(lm, prompt, layer, head, mode=mode, mean_z=means)
    if result.loss_clean is not None:
        console.print(f"loss {result.loss_clean:.4f} -> {result.loss_ablated:.4f} "
                      f"({result.loss_ablated - result.loss_clean:+.4f}) with head {layer}.{head} {mode}-ablated")
    table = Table("clean top", "p clean", "p ablated", "ablated top", "p ablated ", "p clean ")
    for before, after in zip(result.top_clean, result.top_ablated):
        table.add_row(repr(before.token), f"{before.prob_clean:.3f}", f"{before.prob_ablated:.3f}",
                      repr(after.token), f"{after.prob_ablated:.3f}", f"{after.prob_clean:.3f}")
    console.print(table)


@app.command(name="head-rank")
def head_rank_cmd(prompt: PromptOpt, model: ModelOpt = DEFAULT_MODEL,
                  target: Annotated[Optional[str], typer.Option(help="Next token to follow (default: the "
                                                                "model's top prediction).")] = None,
                  top: Annotated[int, typer.Option(help="Heads listed.")] = 10, device: DeviceOpt = None,
                  ws: WorkspaceOpt = None):
    """Which heads matter for this token: every head zero-ablated, ranked by the change of the target logit."""
    from analysis.heads.rank import rank_heads
    from sae.models import load_model

    result = rank_heads(load_model(model, device=device), prompt, target=target)
    console.print(f"target {result.target!r} after {result.tokens[result.position]!r}: logit "
                  f"{result.clean_logit:.3f}, p {result.clean_prob:.3f}")
    table = Table("layer", "head", "KV group", "logit change", "p ablated")
    for e in result.effects[:top]:
        table.add_row(str(e.layer), str(e.head), str(e.kv_group), f"{e.logit_delta:+.4f}", f"{e.prob_ablated:.3f}")
    console.print(table)


@app.command(name="patch")
def patch_cmd(clean: Annotated[str, typer.Option(help="Clean prompt.", show_default=False)],
              corrupted: Annotated[str, typer.Option(help="Corrupted prompt, of the same number of tokens.",
                                                     show_default=False)],
              answer: Annotated[str, typer.Option(help="Answer token of the clean prompt (one token, e.g. ' Mary').",
                                                  show_default=False)],
              wrong: Annotated[str, typer.Option(help="Answer token of the corrupted prompt.", show_default=False)],
              model: ModelOpt = DEFAULT_MODEL, top: Annotated[int, typer.Option(help="Cells listed per heatmap.")] = 10,
              device: DeviceOpt = None, ws: WorkspaceOpt = None):
    """Activation patching: each head's output, and the residual stream at each layer and position, patched from
    the clean run into the corrupted one; metric: logit(answer) - logit(wrong) at the last position, normalised
    to clean = 1, corrupted = 0 (the heads page shows both as heatmaps)."""
    import numpy as np

    from analysis.heads.patching import activation_patching
    from sae.models import load_model
    from store import InputError

    if top < 1:
        raise InputError(f"--top must be at least 1 (got {top})")
    result = activation_patching(load_model(model, device=device), clean, corrupted, answer, wrong)
    console.print(f"logit difference {result.clean_diff:.4f} clean, {result.corrupted_diff:.4f} corrupted")
    heads = Table("layer", "head", "patched metric", title="head outputs (hook_z, every position)")
    for layer, head in zip(*np.unravel_index(np.argsort(-np.abs(result.heads), axis=None)[:top], result.heads.shape)):
        heads.add_row(str(layer), str(head), f"{result.heads[layer, head]:+.4f}")
    console.print(heads)
    resid = Table("layer", "position", "clean / corrupted token", "patched metric", title="residual stream")
    for layer, pos in zip(*np.unravel_index(np.argsort(-np.abs(result.resid), axis=None)[:top], result.resid.shape)):
        resid.add_row(str(layer), str(pos), f"{result.clean_tokens[pos]!r} / {result.corrupted_tokens[pos]!r}",
                      f"{result.resid[layer, pos]:+.4f}")
    console.print(resid)


@app.command(name="heads-export")
def heads_export_cmd(path: Annotated[str, typer.Argument(help="Parquet file to write.")],
                     model: Annotated[Optional[str], typer.Option(help="Only this model.")] = None,
                     corpus: Annotated[Optional[str], typer.Option(help="Only this corpus.")] = None,
                     force: ForceOpt = False, ws: WorkspaceOpt = None):
    """Export stored head scores as Parquet (one row per model, corpus, layer, head, score)."""
    from store import InputError, session
    from store.heads import export_head_stats, list_head_runs
    from store.paths import check_output_file

    space = existing_workspace(ws)
    check_output_file(path, force, make_parent=True)
    with session(space.db_path) as con:
        if not [r for r in list_head_runs(con, model) if corpus is None or r.corpus == corpus]:
            raise InputError("no head scores stored yet for this selection; run `sparsescope heads` first")
        rows = export_head_stats(con, path, model, corpus, force=force)
    console.print(f"wrote {rows:,} head scores to {path}")
