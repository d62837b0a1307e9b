"""Where a training run's activations come from: an activation cache, a user's matrix file, or the model.

`plan_source` resolves a request against the workspace and the store (it reads the corpus' token ids for
streaming and the held-out contexts for CE / KL) into a picklable `SourcePlan`; `build_source` turns the plan
into a sae.sources.Source in each process that trains.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from store.errors import InputError
from store.workspace import Workspace

EVAL_CONTEXTS = 16
"""Held-out contexts on which CE loss and KL are measured."""


@dataclass(frozen=True)
class SourcePlan:
    """Everything a process needs to rebuild the activation source (picklable, so torchrun ranks share it)."""

    kind: str
    """'cache', 'file' or 'model'."""
    path: str = ""
    model: str = ""
    hook: str = ""
    tokens: torch.Tensor | None = None
    """[n, ctx] token ids to stream from (kind 'model')."""
    eval_tokens: torch.Tensor | None = None
    """[m, ctx] held-out contexts for CE / KL; None skips the model metrics."""
    d_in: int = 0


def _find_cache(ws: Workspace, con, value: str) -> Path | None:
    from store.models import get_cache

    path = Path(value).expanduser()
    if path.is_dir():
        return path
    row = get_cache(con, value) if con is not None else None
    if row is not None:
        return Path(row.path)
    try:
        folder = ws.named("activations", value)
    except InputError:  # not a cache name either
        return None
    return folder if folder.is_dir() else None


def _unknown_activations(con, value: str) -> InputError:
    from store.models import list_caches

    known = ", ".join(c.name for c in list_caches(con)) if con is not None else ""
    return InputError(f"activations {value!r} is neither an activation cache nor a .npy/.safetensors file "
                      f"(caches: {known or 'none yet'})")


def _held_out_tokens(con, corpus: str, ids: range) -> torch.Tensor | None:
    from store.corpora import context_tokens

    ids = ids[:EVAL_CONTEXTS]
    rows = context_tokens(con, corpus, ids.start, ids.stop) if len(ids) else []
    return torch.tensor(rows, dtype=torch.long) if rows else None


def _plan_cache(ws: Workspace, con, req, folder: Path) -> SourcePlan:
    from analysis.activations import require_current
    from sae.sources import CacheSource

    source = CacheSource(folder)
    manifest = source.reader.manifest
    require_current(con, folder, manifest)  # CE and KL run on the corpus contexts at its held-out ids
    for asked, have, what in ((req.model, manifest.model, "model"), (req.hook, manifest.hook, "hook")):
        if asked and asked != have:
            raise InputError(f"--{what} {asked} does not match the activation cache ({what} {have})")
    eval_tokens = _held_out_tokens(con, manifest.corpus, source.held_out_contexts) if con is not None else None
    return SourcePlan("cache", str(folder), manifest.model, manifest.hook, eval_tokens=eval_tokens,
                      d_in=source.d_in)


def _plan_model(con, req, lm) -> SourcePlan:
    """Streaming (no activations): enough corpus contexts for req.tokens distinct rows, plus 5% held out."""
    from analysis.corpora import ensure_corpus
    from sae.models import hook_output_dim
    from sae.sources import holdout_count
    from store.corpora import context_tokens

    corpus = _fits_model(ensure_corpus(con, req.corpus, lm.cfg.model_name, req.tokens), lm)
    n_train = -(-req.tokens // (corpus.ctx - 1))
    n = min(corpus.n_contexts, n_train + holdout_count(n_train))
    if n < 2:
        raise InputError(f"corpus {corpus.name!r} has {n} context; streaming needs at least 2")
    tokens = torch.tensor(context_tokens(con, corpus.name, 0, n), dtype=torch.long)
    cut = n - holdout_count(n)
    return SourcePlan("model", "", lm.cfg.model_name, req.hook, tokens=tokens,
                      eval_tokens=tokens[cut:cut + EVAL_CONTEXTS], d_in=hook_output_dim(lm, req.hook))


def _fits_model(corpus, lm):
    if corpus.ctx > lm.cfg.n_ctx:
        raise InputError(f"corpus {corpus.name!r} has contexts of {corpus.ctx} tokens, more than "
                         f"{lm.cfg.model_name} reads ({lm.cfg.n_ctx}); add a corpus with --ctx {lm.cfg.n_ctx} or less")
    return corpus


def plan_source(ws: Workspace, con, req, lm=None) -> SourcePlan:
    from sae.models import check_hook, hook_output_dim, load_model
    from sae.sources import FileSource

    if req.activations:
        path = Path(req.activations).expanduser()
        if path.suffix in (".npy", ".safetensors") or path.is_file():
            d_in = FileSource(path).d_in
            plan = SourcePlan("file", str(path), req.model or "", req.hook or "", d_in=d_in)
        else:
            folder = _find_cache(ws, con, req.activations)
            if folder is None:
                raise _unknown_activations(con, req.activations)
            plan = _plan_cache(ws, con, req, folder)
    elif not (req.model and req.hook):
        raise InputError("give --activations CACHE|FILE, or --model and --hook to stream from the model")
    else:
        plan = None
    if (plan is None or plan.kind == "file") and req.model and req.hook:
        lm = lm if lm is not None and lm.cfg.model_name == req.model else load_model(req.model, device=req.device)
        check_hook(lm, req.hook)
        if plan is None:
            plan = _plan_model(con, req, lm)
        elif hook_output_dim(lm, req.hook) != plan.d_in:
            raise InputError(f"{plan.path} has d={plan.d_in}, but {req.hook} of {req.model} has "
                             f"d={hook_output_dim(lm, req.hook)}")
        else:
            plan = replace(plan, eval_tokens=_file_eval_tokens(con, req, lm))
    if req.d_in is not None and req.d_in != plan.d_in:
        raise InputError(f"--d-in {req.d_in} does not match the activations (d_in = {plan.d_in})")
    return plan


def _file_eval_tokens(con, req, lm) -> torch.Tensor | None:
    """CE contexts for a user's file: the corpus' last contexts (the file's own contexts are unknown)."""
    from analysis.corpora import ensure_corpus

    corpus = _fits_model(ensure_corpus(con, req.corpus, lm.cfg.model_name, None), lm)
    return _held_out_tokens(con, corpus.name, range(max(0, corpus.n_contexts - EVAL_CONTEXTS), corpus.n_contexts))


def build_source(plan: SourcePlan, lm=None, device: str | None = None):
    """The activation source of a plan, built in this process (a model to stream from goes on `device`)."""
    from sae.models import load_model
    from sae.sources import CacheSource, FileSource, ModelSource

    if plan.kind == "cache":
        return CacheSource(plan.path)
    if plan.kind == "file":
        return FileSource(plan.path)
    lm = lm if lm is not None and lm.cfg.model_name == plan.model else load_model(plan.model, device=device)
    return ModelSource(lm, plan.hook, plan.tokens)
