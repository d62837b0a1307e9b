"""Training a dictionary in a workspace: plan the run (validate everything first), train, save, evaluate, record.

Training runs in three phases so the store is held only briefly: `plan_training` reads the store and checks
every input (nothing is written when it fails), `run_training` trains, saves and evaluates without the store,
`record_training` writes the dictionary, its run, log and metrics in one transaction.
`train_dictionary` chains them on one connection.
"""
from __future__ import annotations

import shutil
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import duckdb
import torch

from analysis.dictionaries import check_new_name
from analysis.evaluate import evaluate_dictionary
from sae.training import TrainConfig, check_resumable, dist_context, load_checkpoint, train
from store import dictionaries as repo
from store.db import transaction
from store.errors import InputError
from store.workspace import Workspace

EVAL_CONTEXTS = 16
"""Held-out contexts on which CE loss and KL are measured."""
CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrainRequest:
    arch: str
    """Architecture (sae.dictionaries.ARCHITECTURES); it, d_sae, k and l1 are checked by sae.dictionaries.DictSpec."""
    activations: str | None = None
    """Activation cache (name or folder) or a .npy/.safetensors [N, d] file; None streams from the model."""
    model: str | None = None
    """Model to stream from (no activations) or to check a cache / file against and evaluate CE on."""
    hook: str | None = None
    corpus: str = "builtin"
    """Corpus to stream from (or to take CE contexts from for a file source)."""
    name: str | None = None
    d_in: int | None = None
    """Expected input width, checked against the source."""
    d_sae: int | None = None
    """Features; None: DictSpec's default (8 x d_in)."""
    k: int | None = None
    """None: the architecture's default."""
    l1: float | None = None
    """None: the architecture's default."""
    tokens: int = 1_000_000
    batch: int = 4096
    lr: float = 4e-4
    seed: int = 0
    device: str | None = None
    resume: bool = False
    checkpoint_every: int = 500


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


@dataclass(frozen=True)
class TrainPlan:
    name: str
    config: TrainConfig
    spec: object
    """The sae.dictionaries.DictSpec to build."""
    source: SourcePlan
    folder: Path
    checkpoint: Path
    resume: bool
    run_id: str


@dataclass
class TrainOutcome:
    run_id: str
    metrics: dict[str, float]
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------- planning

def _engine_errors(fn, *args, **kwargs):
    """Call fn, turning a config's ValueError into the one-line InputError the CLI reports."""
    try:
        return fn(*args, **kwargs)
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(str(exc)) from None


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


def _plan_cache(ws: Workspace, con, req: TrainRequest, folder: Path) -> SourcePlan:
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


def _plan_model(con, req: TrainRequest, lm) -> SourcePlan:
    """Streaming (no activations): enough corpus contexts for req.tokens distinct rows, plus 5% held out."""
    from analysis.corpora import ensure_corpus
    from sae.models import hook_output_dim
    from sae.sources import holdout_count
    from store.corpora import context_tokens

    corpus = ensure_corpus(con, req.corpus, lm.cfg.model_name, req.tokens)
    n_train = -(-req.tokens // (corpus.ctx - 1))
    n = min(corpus.n_contexts, n_train + holdout_count(n_train))
    if n < 2:
        raise InputError(f"corpus {corpus.name!r} has {n} context; streaming needs at least 2")
    tokens = torch.tensor(context_tokens(con, corpus.name, 0, n), dtype=torch.long)
    cut = n - holdout_count(n)
    return SourcePlan("model", "", lm.cfg.model_name, req.hook, tokens=tokens,
                      eval_tokens=tokens[cut:cut + EVAL_CONTEXTS], d_in=hook_output_dim(lm, req.hook))


def _plan_source(ws: Workspace, con, req: TrainRequest, lm=None) -> SourcePlan:
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


def _file_eval_tokens(con, req: TrainRequest, lm) -> torch.Tensor | None:
    """CE contexts for a user's file: the corpus' last contexts (the file's own contexts are unknown)."""
    from analysis.corpora import ensure_corpus

    corpus = ensure_corpus(con, req.corpus, lm.cfg.model_name, None)
    return _held_out_tokens(con, corpus.name, range(max(0, corpus.n_contexts - EVAL_CONTEXTS), corpus.n_contexts))


def default_name(req: TrainRequest, source: SourcePlan, d_sae: int) -> str:
    where = source.hook or Path(source.path).stem or "activations"
    return f"{req.arch}-{where}-{d_sae}".replace("/", "_")


def _config(req: TrainRequest, d_sae: int | None, k: int | None) -> TrainConfig:
    """The run's config. It takes d_sae, k and l1 as DictSpec checked them (before the source is known,
    check_options did, and d_sae may still be None: TrainConfig only checks its own fields)."""
    return _engine_errors(TrainConfig, arch=req.arch, d_sae=d_sae, k=k, l1=req.l1, tokens=req.tokens,
                          batch=req.batch, lr=req.lr, seed=req.seed, checkpoint_every=req.checkpoint_every,
                          device=req.device)


def _spec(req: TrainRequest, source: SourcePlan):
    """The dictionary to train, with its defaults filled in (DictSpec checks arch, d_sae, k and l1)."""
    from sae.dictionaries import DictSpec

    return DictSpec.with_defaults(req.arch, source.d_in, req.d_sae, req.k, l1=req.l1, hook_name=source.hook,
                                  model_name=source.model)


def _check_options(req: TrainRequest) -> None:
    """Everything that can be checked before the source is known (so nothing is created for bad options)."""
    from sae.device import pick_device
    from sae.dictionaries import check_options

    check_options(req.arch, req.d_sae, req.k, req.l1)  # what DictSpec checks, short of d_in
    _config(req, req.d_sae, req.k)  # the run's own options (tokens, batch, lr, ...)
    pick_device(req.device)
    world = dist_context().world
    if req.batch % world:
        raise InputError(f"--batch {req.batch} must be divisible by the number of processes ({world})")


def _check_free(ws: Workspace, con, name: str, resume: bool) -> Path:
    """InputError when the name is taken or a stale checkpoint is in the way; returns the checkpoint path."""
    check_new_name(ws, con, name, allow_folder=resume)
    checkpoint = ws.named("checkpoints", name) / CHECKPOINT
    if resume:
        load_checkpoint(checkpoint)  # missing or truncated: fail before anything else happens
    elif checkpoint.exists():
        raise InputError(f"an unfinished run of {name!r} left {checkpoint}; add --resume to continue it, or "
                         "delete it to start over")
    return checkpoint


def plan_training(ws: Workspace, con, req: TrainRequest, lm=None) -> TrainPlan:
    """Check every input and resolve defaults; raises InputError and writes nothing when one is bad.

    Streaming from the builtin corpus creates that corpus on first use (after the options were checked).
    """
    _check_options(req)
    if req.name is not None:
        _check_free(ws, con, req.name, req.resume)
    source = _plan_source(ws, con, req, lm)
    spec = _spec(req, source)
    config = _config(req, spec.d_sae, spec.k)
    name = req.name or default_name(req, source, spec.d_sae)
    checkpoint = _check_free(ws, con, name, req.resume)
    run_id = uuid.uuid4().hex[:12]
    if req.resume:
        payload = load_checkpoint(checkpoint)
        check_resumable(payload, config, asdict(spec), checkpoint)
        run_id = payload["state"]["run_id"]
    return TrainPlan(name, config, spec, source, ws.named("dictionaries", name), checkpoint, req.resume, run_id)


# ---------------------------------------------------------------------------------------------- running

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


def run_training(plan: TrainPlan, lm=None, progress: bool = True, evals: dict | None = None) -> TrainOutcome | None:
    """Train, then (rank 0 only) save the dictionary and evaluate it; other ranks return None."""
    from sae.dictionaries import save_dictionary

    source = build_source(plan.source, lm, plan.config.device)
    payload = load_checkpoint(plan.checkpoint) if plan.resume else None
    writer = dist_context().rank == 0
    result = train(plan.spec, plan.config, source, checkpoint=plan.checkpoint, resume=payload,
                   progress=progress, writer=writer, run_id=plan.run_id)
    if not writer:
        return None
    save_dictionary(result.sae, plan.folder, activation_scale=result.state.scale)
    metrics = evaluate_dictionary(plan.folder, source, plan.source.eval_tokens, plan.source.model,
                                  plan.source.hook, lm, evals, device=plan.config.device)
    seconds = result.state.seconds
    metrics |= {"train_tokens": float(result.state.tokens), "train_seconds": seconds,
                "train_tokens_per_s": result.state.tokens / seconds if seconds else float("nan")}
    return TrainOutcome(plan.run_id, metrics, result.state.log, seconds)


def start_training(con: duckdb.DuckDBPyConnection, plan: TrainPlan) -> None:
    """Record the run as 'running' (visible to the UI while it trains)."""
    repo.start_run(con, plan.name, plan.run_id, asdict(plan.config) | {"source": plan.source.path or
                                                                       plan.source.kind})


def record_training(con: duckdb.DuckDBPyConnection, plan: TrainPlan, outcome: TrainOutcome) -> repo.DictionaryRow:
    """Make the trained dictionary visible: its row, run, log and metrics in one transaction."""
    row = repo.DictionaryRow(plan.name, plan.source.model, plan.source.hook, plan.config.arch, plan.source.d_in,
                             plan.config.d_sae, plan.config.k, str(plan.folder))
    with transaction(con):
        repo.add_dictionary(con, row)
        repo.finish_run(con, plan.name, plan.run_id)
        repo.add_log(con, plan.name, plan.run_id, [repo.LogRow(**r) for r in outcome.log])
        repo.set_metrics(con, plan.name, outcome.metrics)
    shutil.rmtree(plan.checkpoint.parent, ignore_errors=True)
    return repo.require_dictionary(con, plan.name)


def train_dictionary(ws: Workspace, con: duckdb.DuckDBPyConnection, req: TrainRequest, lm=None,
                     progress: bool = True, evals: dict | None = None) -> tuple[repo.DictionaryRow, dict]:
    """Plan, train, save, evaluate and record a dictionary on one connection (single process)."""
    plan = plan_training(ws, con, req, lm)
    start_training(con, plan)
    try:
        outcome = run_training(plan, lm, progress, evals)
    except BaseException:
        repo.finish_run(con, plan.name, plan.run_id, status="failed")
        raise
    return record_training(con, plan, outcome), outcome.metrics


def train_in_workspace(ws: Workspace, req: TrainRequest, lm=None, progress: bool = True,
                       evals: dict | None = None) -> tuple[repo.DictionaryRow, dict] | None:
    """Train with short store sessions (the store stays readable while training runs).

    Under torchrun, rank 0 plans and records and sends the plan to the other ranks; every rank trains.
    Returns None on ranks other than 0.
    """
    from sae.training import init_distributed
    from store.db import session

    ctx = init_distributed()
    try:
        plan, error = None, None
        if ctx.rank == 0:
            try:
                with session(ws.db_path) as con:
                    plan = plan_training(ws, con, req, lm)
                    start_training(con, plan)
            except InputError as exc:
                error = exc
        if ctx.world > 1:
            import torch.distributed as dist

            box = [plan, error]
            dist.broadcast_object_list(box, src=0)
            plan, error = box
        if error is not None:
            raise error
        try:
            outcome = run_training(plan, lm, progress, evals)
        except BaseException:
            if ctx.rank == 0:
                with session(ws.db_path) as con:
                    repo.finish_run(con, plan.name, plan.run_id, status="failed")
            raise
        if ctx.rank != 0:
            return None
        with session(ws.db_path) as con:
            return record_training(con, plan, outcome), outcome.metrics
    finally:
        if ctx.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
