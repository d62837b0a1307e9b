"""Commands for models, corpora and activation caches."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from app.commands.common import DeviceOpt, WorkspaceOpt, app, console, err_console, quiet, workspace

corpus_app = typer.Typer(help="Build and list corpora (tokenised text kept in the store).", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")


@app.command()
def models(hooks: Annotated[bool, typer.Option("--hooks", help="List every hook name template.")] = False):
    """List the models SparseScope can load, with size, layers, d_model and hook names."""
    from sae.models import DEFAULT_MODEL, TINY, load_model, model_info

    table = Table("model", "params", "layers", "d_model", "heads", "n_ctx")
    hook_lines = []
    for name in (DEFAULT_MODEL, TINY):
        info = model_info(load_model(name, device="cpu"))
        table.add_row(info.name + (" (default)" if name == DEFAULT_MODEL else ""), f"{info.n_params / 1e6:.1f}M",
                      str(info.n_layers), str(info.d_model), str(info.n_heads), str(info.n_ctx))
        shown = [t for t in info.hook_templates if hooks or "resid" in t or "hook_z" in t or "mlp_out" in t]
        hook_lines.append(Text.assemble((info.name, "bold"), f" hooks (L = 0..{info.n_layers - 1}): ",
                                        ", ".join(shown)))
    table.add_row("any TransformerLens name", "", "", "", "", "")
    console.print(table)
    console.print(Text("\n").join(hook_lines), soft_wrap=False)
    if not hooks:
        console.print("(--hooks lists every hook; other TransformerLens names such as gpt2 need the network)")


@corpus_app.command("add")
def corpus_add(
    name: Annotated[str, typer.Argument(help="Name for the corpus.")],
    source: Annotated[str, typer.Option(help="builtin, a .txt/.jsonl/.parquet file or folder, or hf:DATASET.")],
    tokens: Annotated[Optional[int], typer.Option(
        help="Keep at most this many tokens (default: the whole source, up to the most a corpus holds).",
        show_default=False)] = None,
    ctx: Annotated[int, typer.Option(help="Tokens per context.")] = 128,
    model: Annotated[str, typer.Option(help="Model whose tokenizer to use.")] = "smollm2-135m-instruct",
    replace: Annotated[bool, typer.Option(help="Rebuild the corpus if it exists.")] = False,
    force: Annotated[bool, typer.Option(help="With --replace: delete the activation caches, feature analyses "
                                             "and head scans built on the old text.")] = False,
    ws: WorkspaceOpt = None,
):
    """Tokenise a text source into fixed-length contexts and keep them in the store."""
    from analysis.corpora import build_corpus, check_corpus_request, tokenize_corpus
    from store import session

    space = workspace(ws)
    with session(space.db_path) as con:  # refused options are refused before the (long) tokenising
        check_corpus_request(con, name, source, tokens, ctx, replace, force)
    contexts = tokenize_corpus(source, model, ctx, tokens)  # without the store: other jobs may write meanwhile
    with session(space.db_path) as con:
        built = build_corpus(con, name, source, model, tokens=tokens, ctx=ctx, replace=replace, force=force,
                             ws=space, contexts=contexts)
    corpus = built.corpus
    if built.deleted:
        console.print(f"deleted what was built on the old text of {corpus.name}: {built.deleted.describe()}",
                      markup=False, soft_wrap=True)
    for folder in built.removed:
        console.print(f"removed {folder}", markup=False, soft_wrap=True)
    for folder in built.kept:
        console.print(f"kept {folder} (outside the workspace or not removable; its store row is deleted)",
                      markup=False, soft_wrap=True)
    console.print(Text.assemble("corpus ", (corpus.name, "bold"), f": {corpus.n_contexts:,} contexts x "
                                f"{corpus.ctx} tokens = {corpus.n_tokens:,} tokens ({corpus.model})"))


@corpus_app.command("list")
def corpus_list(ws: WorkspaceOpt = None):
    """List the workspace's corpora."""
    from store import session
    from store.corpora import list_corpora

    space = workspace(ws)
    with session(space.db_path) as con:
        rows = list_corpora(con)
    table = Table("corpus", "model", "source", "ctx", "contexts", "tokens")
    for c in rows:
        table.add_row(c.name, c.model, c.source, str(c.ctx), f"{c.n_contexts:,}", f"{c.n_tokens:,}")
    console.print(table)


@app.command()
def activations(
    hook: Annotated[str, typer.Option(help="Hook name, e.g. blocks.6.hook_resid_post; several, comma-separated "
                                           "(blocks.2.hook_resid_post,blocks.6.hook_resid_post), are cached from "
                                           "one forward pass.")],
    model: Annotated[str, typer.Option(help="Model name.")] = "smollm2-135m-instruct",
    corpus: Annotated[str, typer.Option(help="Corpus name (`builtin` is created on first use).")] = "builtin",
    tokens: Annotated[int, typer.Option(help="Tokens to cache.")] = 200_000,
    batch: Annotated[int, typer.Option(help="Contexts per forward pass.")] = 32,
    device: DeviceOpt = None,
    ws: WorkspaceOpt = None,
):
    """Cache activations at one hook or several (runs the model only as far as the deepest); resumes a killed
    run."""
    from analysis.activations import build_caches
    from sae.models import check_hook, load_model
    from store import InputError

    if tokens <= 0:
        raise InputError(f"--tokens must be positive (got {tokens})")
    hooks = [h.strip() for h in hook.split(",") if h.strip()]
    if not hooks:
        raise InputError("--hook names no hook")
    space = workspace(ws)
    lm = load_model(model, device=device)
    for h in hooks:
        check_hook(lm, h)
    # no connection held while the model runs: build_caches opens the store for each short read and at the end
    for result in build_caches(space, None, lm, hooks, corpus, tokens, batch=batch, progress=not quiet()):
        if result.note:
            err_console.print(f"note: {result.note}", markup=False, highlight=False, soft_wrap=True)
        m = result.manifest
        verb = "reused" if result.reused else "wrote"
        console.print(f"{verb} {m.n_tokens:,} tokens x d={m.d} at {m.hook} in {len(m.shards)} shards: {result.path}")
