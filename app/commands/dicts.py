"""Commands for dictionaries: train, list, import."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from app.commands.common import DeviceOpt, WorkspaceOpt, app, console, help_filled_by, quiet, workspace


def registry_help() -> dict[str, str]:
    """Help of the train options that depend on the architectures, from the registry."""
    from sae.dictionaries import trainable
    from sae.dictionaries.factory import FEATURES_PER_INPUT

    archs = trainable()
    names = [a.name for a in archs]
    with_k = [f"{a.name}: {a.k_meaning} (default {a.default_k})" for a in archs if a.default_k is not None]
    with_l1 = [f"{a.name}: {a.sparsity_meaning} (default {a.default_sparsity:g})" for a in archs
               if a.default_sparsity is not None]
    with_options = [f"{a.name}: " + "; ".join(f"{o.name}, {o.meaning} (default {o.default:g})"
                                              if not isinstance(o.default, bool) else
                                              f"{o.name}, {o.meaning} (default {str(o.default).lower()})"
                                              for o in a.options) for a in archs if a.options]
    return {"arch": f"{', '.join(names[:-1])} or {names[-1]}.",
            "d_sae": f"Features (default {FEATURES_PER_INPUT} x d_in).",
            "k": f"{'; '.join(with_k)}.", "l1": f"Sparsity coefficient, {'; '.join(with_l1)}.",
            "option": f"An architecture's own option, NAME=VALUE (repeat it for several). {'. '.join(with_options)}."}


TrainCommand = help_filled_by(registry_help)
"""`train`, whose --arch, --d-sae, --k, --l1 and --option help is read from the architecture registry (torch,
SAELens)."""


@app.command(name="train", cls=TrainCommand)
def train_cmd(
    arch: Annotated[str, typer.Option(help="(From the architecture registry: TrainCommand.)")],
    activations: Annotated[Optional[str], typer.Option(
        help="Activation cache (name or folder) or a .npy/.safetensors [N, d] file; omit to stream from "
             "--model at --hook.", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option(help="Model to stream from (or to check the activations "
                                                     "against and measure CE loss on).", show_default=False)] = None,
    hook: Annotated[Optional[str], typer.Option(help="Hook to stream from, e.g. blocks.6.hook_resid_post.",
                                                show_default=False)] = None,
    corpus: Annotated[str, typer.Option(help="Corpus to stream from.")] = "builtin",
    d_in: Annotated[Optional[int], typer.Option("--d-in", help="Expected input width (checked).",
                                                show_default=False)] = None,
    d_sae: Annotated[Optional[int], typer.Option("--d-sae", help="Features.",
                                                 show_default=False)] = None,
    k: Annotated[Optional[int], typer.Option(help="(From the architecture registry: TrainCommand.)",
                                             show_default=False)] = None,
    l1: Annotated[Optional[float], typer.Option(help="(From the architecture registry: TrainCommand.)",
                                                show_default=False)] = None,
    option: Annotated[Optional[list[str]], typer.Option(help="(From the architecture registry: TrainCommand.)",
                                                        show_default=False)] = None,
    tokens: Annotated[int, typer.Option(help="Training tokens.")] = 1_000_000,
    batch: Annotated[int, typer.Option(help="Tokens per step (the global batch under torchrun).")] = 4096,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 4e-4,
    name: Annotated[Optional[str], typer.Option(help="Dictionary name (default ARCH-HOOK-D_SAE).",
                                                show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Random seed (initialisation, data order).")] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints, also written every 2 minutes "
                                                       "and when training ends, so a killed or failed run of any "
                                                       "length can --resume (0: none).")] = 500,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the killed run of --name from its "
                                                          "checkpoint.")] = False,
    device: DeviceOpt = None,
    ws: WorkspaceOpt = None,
):
    """Train a dictionary, save it in SAELens format under WORKSPACE/dictionaries/NAME and evaluate it.

    Data parallel on N processes: torchrun --nproc_per_node N -m app.cli train ...
    """
    space = workspace(ws)
    # The name is reserved before torch is imported (seconds on a busy machine), so a second run of a name in
    # training is refused at once; the engine reserves it again (the same reservation) and keeps it to the end.
    hold = _reserve_early(space, name)
    try:
        from analysis.training import TrainRequest, train_in_workspace

        request = TrainRequest(arch=arch, activations=activations, model=model, hook=hook, corpus=corpus,
                               name=name, d_in=d_in, d_sae=d_sae, k=k, l1=l1, options=tuple(option or ()),
                               tokens=tokens, batch=batch, lr=lr,
                               seed=seed, device=device, resume=resume, checkpoint_every=checkpoint_every)
        result = train_in_workspace(space, request, progress=not quiet())
    finally:
        if hold is not None:
            hold.release(remove=True)  # the lock file (and the folder, when the run left nothing in it)
    if result is None:  # a torchrun rank other than 0
        return
    row, metrics = result
    console.print(Text.assemble("dictionary ", (row.name, "bold"), f" ({row.arch}, d_in={row.d_in}, "
                                f"d_sae={row.d_sae}{f', k={row.k}' if row.k else ''}) saved to {row.path}"))
    console.print(summary(metrics))


def _reserve_early(space, name: str | None):
    """Rank 0 (or a plain run) reserves a given --name; other torchrun ranks and default names do not."""
    import os

    from store.locks import reserve_dictionary

    if name is None or os.environ.get("RANK", "0") != "0":
        return None
    return reserve_dictionary(space, name)


def _fmt(value, spec: str) -> str:
    return "-" if value is None or value != value else format(value, spec)


def summary(metrics: dict) -> str:
    """One line of the headline metrics."""
    parts = [f"FVU {_fmt(metrics.get('fvu'), '.3f')}", f"L0 {_fmt(metrics.get('l0'), '.1f')}",
             f"dead {_fmt(metrics.get('dead'), '.1%')}", f"cos {_fmt(metrics.get('cos'), '.3f')}"]
    if metrics.get("ce_recovered") is not None:
        parts += [f"CE recovered {_fmt(metrics.get('ce_recovered'), '.3f')}",
                  f"CE {_fmt(metrics.get('ce_clean'), '.3f')} -> {_fmt(metrics.get('ce_sae'), '.3f')} "
                  f"(zero {_fmt(metrics.get('ce_zero'), '.3f')})", f"KL {_fmt(metrics.get('kl'), '.3f')}"]
    if metrics.get("train_seconds"):
        parts.append(f"{metrics['train_tokens']:,.0f} tokens in {metrics['train_seconds']:.0f} s")
    return ", ".join(parts)


@app.command(name="dicts")
def dicts_cmd(ws: WorkspaceOpt = None):
    """List the workspace's dictionaries with their evaluation metrics."""
    from store import session
    from store.dictionaries import get_metrics, list_dictionaries, unfinished_runs

    space = workspace(ws, create=False)
    if not space.db_path.exists():  # nothing stored here yet: say so, and create nothing
        console.print(f"no dictionaries yet: no store in {space.root} (sparsescope train, sparsescope import)")
        return
    with session(space.db_path) as con:
        rows = [(d, get_metrics(con, d.name)) for d in list_dictionaries(con)]
        unfinished = unfinished_runs(con)
    table = Table("name", "arch", "model", "hook", "d_in", "d_sae", "k", "FVU", "L0", "dead", "CE rec.", "source")
    for d, m in rows:
        table.add_row(d.name, d.arch, d.model or "-", d.hook or "-", str(d.d_in), str(d.d_sae),
                      str(d.k) if d.k else "-", _fmt(m.get("fvu"), ".3f"), _fmt(m.get("l0"), ".1f"),
                      _fmt(m.get("dead"), ".1%"), _fmt(m.get("ce_recovered"), ".3f"), d.source)
    console.print(table if rows else "no dictionaries yet (sparsescope train, sparsescope import)")
    for run in unfinished:  # a failed run keeps its checkpoint: `train ... --name NAME --resume` continues it
        reason = f": {run['reason']}" if run["reason"] else ""
        console.print(Text.assemble("unfinished run of ", (run["dictionary"], "bold"), f" ({run['status']}{reason})"))


@app.command(name="import")
def import_cmd(
    ref: Annotated[str, typer.Argument(help="A SAELens-format folder, or saelens:RELEASE/ID (from the Hugging Face "
                                            "cache, downloaded into it when online).")],
    name: Annotated[Optional[str], typer.Option(help="Name in the workspace (default: the folder or ID).",
                                                show_default=False)] = None,
    evaluate: Annotated[bool, typer.Option("--eval/--no-eval", help="Evaluate it on the corpus for its model and "
                                                                     "hook (FVU, L0, dead, CE recovered).")] = True,
    corpus: Annotated[str, typer.Option(help="Corpus to evaluate on (`builtin` is created on first use).")] = "builtin",
    eval_tokens: Annotated[int, typer.Option("--eval-tokens", help="Corpus tokens to evaluate on.")] = 8192,
    device: DeviceOpt = None,
    ws: WorkspaceOpt = None,
):
    """Add an existing SAELens-format dictionary to the workspace, evaluated on its model and hook."""
    from analysis.byod import ImportRequest, import_in_workspace

    req = ImportRequest(ref, name=name, evaluate=evaluate, corpus=corpus, tokens=eval_tokens, device=device)
    req.check()
    out = import_in_workspace(workspace(ws), req)
    row = out.row
    console.print(Text.assemble("imported ", (row.name, "bold"), f" ({row.arch}, d_in={row.d_in}, "
                                f"d_sae={row.d_sae}) from {ref}"))
    if out.metrics:
        console.print(summary(out.metrics), highlight=False)
    console.print(out.note, highlight=False)
