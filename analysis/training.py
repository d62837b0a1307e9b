"""Training a dictionary in a workspace: plan the run (validate everything first), train, save, evaluate, record.

Training runs in three phases so the store is held only briefly: `plan_training` reads the store and checks
every input (nothing is written when it fails), `run_training` trains, saves and evaluates without the store,
`record_training` writes the dictionary, its run, log and metrics in one transaction.
`train_dictionary` chains them on one connection.
"""
from __future__ import annotations

import contextlib
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import duckdb

from analysis.dictionaries import check_new_name
from analysis.evaluate import evaluate_dictionary
from analysis.sources import SourcePlan, build_source, plan_source
from sae.training import TrainConfig, check_checkpoint, dist_context, load_checkpoint, train, training_memory
from store import dictionaries as repo
from store.db import borrow, transaction
from store.errors import InputError
from store.locks import DICTIONARY_LOCK, Reservation, release, reserve_dictionary
from store.workspace import Workspace

CHECKPOINT = "checkpoint.safetensors"
LOCK = DICTIONARY_LOCK
"""WORKSPACE/checkpoints/NAME/.lock: held (flock) by the process training NAME, from planning to the end."""


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
    options: tuple[str, ...] = ()
    """The architecture's own options as typed, NAME=VALUE (sae.dictionaries.parse_options); the rest: defaults."""
    tokens: int = 1_000_000
    batch: int = 4096
    lr: float = 4e-4
    seed: int = 0
    device: str | None = None
    resume: bool = False
    checkpoint_every: int = 500


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
    from sae.dictionaries import DictSpec, parse_options

    return DictSpec.with_defaults(req.arch, source.d_in, req.d_sae, req.k, l1=req.l1, hook_name=source.hook,
                                  model_name=source.model, options=parse_options(req.arch, req.options))


def check_train_options(req: TrainRequest) -> None:
    """Everything that can be checked before the source is known (so nothing is created for bad options)."""
    from sae.device import pick_device
    from sae.dictionaries import check_options, parse_options

    options = parse_options(req.arch, req.options)
    check_options(req.arch, req.d_sae, req.k, req.l1, options)  # what DictSpec checks, short of d_in
    _config(req, req.d_sae, req.k)  # the run's own options (tokens, batch, lr, ...)
    pick_device(req.device)
    world = dist_context().world
    if req.batch % world:
        raise InputError(f"--batch {req.batch} must be divisible by the number of processes ({world})")


def _claim(ws: Workspace, con, name: str, resume: bool) -> tuple[Path, Reservation]:
    """Reserve the name for this process (InputError naming the pid of a process training it now), check that
    it is free and no stale checkpoint is in the way: (checkpoint path, reservation)."""
    checkpoint = ws.named("checkpoints", name) / CHECKPOINT
    check_new_name(ws, con, name, allow_folder=resume or checkpoint.exists())  # a checkpoint: say --resume
    hold = reserve_dictionary(ws, name)
    try:
        if resume:
            load_checkpoint(checkpoint)  # missing or truncated: fail before anything else happens
        elif checkpoint.exists():
            raise InputError(f"an unfinished run of {name!r} left {checkpoint}; add --resume to continue it, or "
                             "delete it to start over")
    except BaseException:
        hold.release(remove=True)
        raise
    return checkpoint, hold


def plan_training(ws: Workspace, con, req: TrainRequest, lm=None) -> TrainPlan:
    """Check every input and resolve defaults; raises InputError and writes nothing when one is bad.

    The name is reserved for this process (see LOCK) until `release_name`; streaming from the builtin corpus
    creates that corpus on first use (after the options were checked).
    """
    check_train_options(req)
    first = _claim(ws, con, req.name, req.resume)[1] if req.name is not None else None
    try:
        source = plan_source(ws, con, req, lm)
        spec = _spec(req, source)
        config = _config(req, spec.d_sae, spec.k)
        _check_memory(config, spec, req.device)
        name = req.name or default_name(req, source, spec.d_sae)
        checkpoint, hold = _claim(ws, con, name, req.resume)
        run_id = uuid.uuid4().hex[:12]
        if req.resume:
            try:
                payload = load_checkpoint(checkpoint)
                check_checkpoint(payload, spec, config, checkpoint)
            except BaseException:
                hold.release(remove=True)
                raise
            run_id = payload["state"]["run_id"]
    finally:
        if first is not None:  # the final claim holds the same name
            first.release(remove=True)
    return TrainPlan(name, config, spec, source, ws.named("dictionaries", name), checkpoint, req.resume, run_id)


def release_name(ws: Workspace, name: str) -> None:
    """Let go of the name's reservation (the lock file goes with the last holder in this process)."""
    release(ws.named("checkpoints", name) / LOCK, remove=True)


def _check_memory(config: TrainConfig, spec, device: str | None) -> None:
    from sae.device import pick_device, require_memory

    need = training_memory(spec.d_in, spec.d_sae, config.batch // dist_context().world)
    require_memory(need, f"training d_in={spec.d_in} x --d-sae {spec.d_sae} with --batch {config.batch}",
                   pick_device(device))


# ---------------------------------------------------------------------------------------------- running

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
    """Make the trained dictionary visible: its row, run, log and metrics in one transaction; then (and only
    then) the checkpoint goes."""
    row = repo.DictionaryRow(plan.name, plan.source.model, plan.source.hook, plan.config.arch, plan.source.d_in,
                             plan.config.d_sae, plan.config.k, str(plan.folder))
    with transaction(con, "train"):
        repo.add_dictionary(con, row)
        repo.finish_run(con, plan.name, plan.run_id)
        repo.add_log(con, plan.name, plan.run_id, [repo.LogRow(**r) for r in outcome.log])
        repo.set_metrics(con, plan.name, outcome.metrics)
    shutil.rmtree(plan.checkpoint.parent, ignore_errors=True)
    return repo.require_dictionary(con, plan.name)


def failure_reason(exc: BaseException) -> str:
    """One line for the run's row: what stopped it."""
    if isinstance(exc, KeyboardInterrupt):  # a cancel: the message says at which step and what it kept
        return f"interrupted: {exc}"[:500] if str(exc) else "interrupted"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return (text if isinstance(exc, InputError) else f"{exc.__class__.__name__}: {text}".rstrip(": "))[:500]


@contextlib.contextmanager
def _failure_recorded(store, plan: TrainPlan) -> Iterator[None]:
    """Mark the run 'failed' with the reason when the block raises (store: a connection, a path, or None on
    the ranks that do not write); the checkpoint stays for --resume."""
    try:
        yield
    except BaseException as exc:
        if store is not None:
            with borrow(store) as con:
                repo.finish_run(con, plan.name, plan.run_id, status="failed", reason=failure_reason(exc))
        raise


@contextlib.contextmanager
def _named_early(ws: Workspace, req: TrainRequest) -> Iterator[None]:
    """Check the options and reserve the name before waiting for the store, which another process may hold for
    a while: a second run of a name in training is refused at once. (plan_training reserves it again.)"""
    check_train_options(req)
    if req.name is not None:
        repo.check_name(req.name)  # before it names a folder
    hold = reserve_dictionary(ws, req.name) if req.name else None
    try:
        yield
    finally:
        if hold is not None:
            hold.release(remove=True)


def train_dictionary(ws: Workspace, con: duckdb.DuckDBPyConnection, req: TrainRequest, lm=None,
                     progress: bool = True, evals: dict | None = None) -> tuple[repo.DictionaryRow, dict]:
    """Plan, train, save, evaluate and record a dictionary on one connection (single process)."""
    plan = plan_training(ws, con, req, lm)
    try:
        start_training(con, plan)
        with _failure_recorded(con, plan):
            outcome = run_training(plan, lm, progress, evals)
            return record_training(con, plan, outcome), outcome.metrics
    finally:
        release_name(ws, plan.name)


def train_in_workspace(ws: Workspace, req: TrainRequest, lm=None, progress: bool = True,
                       evals: dict | None = None) -> tuple[repo.DictionaryRow, dict] | None:
    """Train with short store sessions (the store stays readable while training runs).

    Under torchrun, rank 0 plans and records and sends the plan to the other ranks; every rank trains.
    Returns None on ranks other than 0.
    """
    from sae.training import init_distributed
    from store.db import session

    ctx = init_distributed()
    plan = None
    try:
        error = None
        if ctx.rank == 0:
            try:
                with _named_early(ws, req), session(ws.db_path) as con:
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
        with _failure_recorded(ws.db_path if ctx.rank == 0 else None, plan):
            outcome = run_training(plan, lm, progress, evals)
            if ctx.rank != 0:
                return None
            with session(ws.db_path) as con:
                return record_training(con, plan, outcome), outcome.metrics
    finally:
        if plan is not None and ctx.rank == 0:
            release_name(ws, plan.name)
        if ctx.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
