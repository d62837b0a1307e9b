"""The training loop around `sae.dictionaries.train_step`: normalisation, schedule, checkpoints, resume, DDP.

A run is a pure function of (config, source, seed): the data order comes from `BatchStream` (seeded, addressed
by row position) and a checkpoint holds everything else that changes while training (weights, optimizer
moments, step, row position, RNG states, feature firing history, log rows). Resuming from a checkpoint
therefore replays the same steps an uninterrupted run would take.
"""
from __future__ import annotations

import math
import os
import random
import signal
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sae import checkpoint
from sae.checkpoint import load_checkpoint, save_checkpoint  # noqa: F401 - the checkpoint API of a run
from sae.device import autocast, pick_device
from sae.sources import BatchStream, Source
from store.errors import InputError
from store.faults import crash_point

CHECKPOINT_SECONDS = 120.0
"""Besides every `checkpoint_every` steps, a run checkpoints when this long has passed since its last
checkpoint, and once more when training ends: a default run (fewer steps than checkpoint_every) too."""
RESUMABLE_CHANGES = ("device", "checkpoint_every", "log_every")
"""Config fields a resumed run may change: they do not alter the numbers it computes."""


@dataclass(frozen=True)
class TrainConfig:
    """How a run trains. arch, d_sae, k and l1 are copied from the run's DictSpec, which checked them and filled
    in their defaults: they are kept here so that the stored run config and a checkpoint record them."""

    arch: str
    """Architecture name (sae.dictionaries.ARCHITECTURES)."""
    d_sae: int
    """Number of features in the dictionary."""
    k: int | None = None
    """The architecture's k (active features, pursuit steps, codes), None where it has none."""
    l1: float | None = None
    """Sparsity coefficient (relu: L1, jumprelu: L0); None keeps the architecture's default."""
    tokens: int = 1_000_000
    """Training tokens (rows) in all; the run takes ceil(tokens / batch) steps."""
    batch: int = 4096
    """Rows per step (the global batch under torchrun)."""
    lr: float = 4e-4
    """Adam learning rate, held constant and decayed linearly to 0 over the last `decay_fraction`."""
    decay_fraction: float = 0.2
    """Share of the steps over which the learning rate decays to zero."""
    seed: int = 0
    """Seeds the initialisation, the data order and every random choice of the training step."""
    checkpoint_every: int = 500
    """Steps between checkpoints, which are also written every CHECKPOINT_SECONDS and when training ends
    (0: no checkpoint at all)."""
    log_every: int = 10
    """Steps between training_log rows."""
    dead_window: int = 250_000
    """A feature is counted dead in the progress bar when it has not fired for this many tokens."""
    init_rows: int = 16_384
    """Rows sampled before training to estimate the input scale and initialise the dictionary."""
    device: str | None = None
    """cuda, mps or cpu; None picks the best available."""

    def __post_init__(self):
        for name in ("tokens", "batch", "log_every", "dead_window", "init_rows"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive (got {getattr(self, name)})")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"--lr must be positive (got {self.lr})")
        if not 0 <= self.decay_fraction <= 1:
            raise ValueError(f"decay_fraction must be in [0, 1] (got {self.decay_fraction})")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (got {self.checkpoint_every})")

    @property
    def total_steps(self) -> int:
        return -(-self.tokens // self.batch)

    def lr_at(self, step: int) -> float:
        decay_start = self.total_steps * (1 - self.decay_fraction)
        if step < decay_start:
            return self.lr
        return self.lr * max(0.0, (self.total_steps - step) / max(1.0, self.total_steps - decay_start))


@dataclass
class TrainState:
    """What changes during a run; a checkpoint is this plus the weights and optimizer state."""

    run_id: str
    scale: float
    """Inputs are multiplied by this before the dictionary sees them (folded back on save)."""
    step: int = 0
    position: int = 0
    """Rows of the data stream consumed so far (the global batch counts once)."""
    last_fired: torch.Tensor | None = None
    """Per feature: tokens seen when it last fired (int64 [d_sae])."""
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return self.position


@dataclass
class TrainResult:
    sae: Any
    """The trained sae_lens TrainingSAE (on normalised inputs; save with activation_scale=state.scale)."""
    state: TrainState
    config: TrainConfig


def input_scale(sample: torch.Tensor, d_in: int, unit_norm: bool = False) -> float:
    """Factor that brings the mean row norm to sqrt(d_in) (SAELens' convention: unit mean square entry), or to 1
    for an architecture whose thresholds live on that scale (Architecture.unit_norm_inputs: gba)."""
    mean_norm = float(sample.norm(dim=-1).mean())
    if not math.isfinite(mean_norm) or mean_norm <= 0:
        raise InputError(f"cannot normalise activations with mean norm {mean_norm}")
    return (1.0 if unit_norm else math.sqrt(d_in)) / mean_norm


def training_memory(d_in: int, d_sae: int, batch: int) -> int:
    """Bytes a run needs at the least: a float32 decoder with its gradient and Adam's two moments (16 bytes a
    weight; most architectures add an encoder as large), and one batch's inputs and feature activations."""
    return 16 * d_in * d_sae + 4 * batch * (d_in + d_sae)


# ---------------------------------------------------------------------------------------------- checkpoints
# The file format lives in sae/checkpoint.py (safetensors + JSON, no pickle); these bind it to TrainState.

def check_resumable(payload: dict, config: TrainConfig, spec: dict, path: Path) -> None:
    """InputError unless the checkpoint was written by a run with the same settings."""
    names = {f.name for f in fields(TrainState)} - {"last_fired"}
    if set(payload["state"]) - {"last_fired"} != names:
        raise InputError(f"checkpoint {path} has unknown or missing state keys "
                         f"({', '.join(sorted((set(payload['state']) - {'last_fired'}) ^ names))}); "
                         "delete it to start over")
    checkpoint.check_resumable(payload, config, spec, path, RESUMABLE_CHANGES)


def check_checkpoint(payload: dict, spec, config: TrainConfig, path: Path) -> None:
    """check_resumable, then every tensor against the dictionary `spec` builds (on the CPU, uninitialised)."""
    from sae.dictionaries import build_training_sae

    check_resumable(payload, config, asdict_spec(spec), path)
    sae = build_training_sae(spec, device="cpu")
    checkpoint.check_tensors(payload, sae, torch.optim.Adam(sae.parameters(), lr=config.lr), path)


def _restore(payload: dict, sae, optimizer) -> TrainState:
    checkpoint.check_tensors(payload, sae, optimizer, Path(payload["path"]))
    checkpoint.restore(payload, sae, optimizer)
    return TrainState(**payload["state"])


# ---------------------------------------------------------------------------------------------- the loop

def _build(spec, config: TrainConfig, source: Source, device: torch.device, initialise: bool):
    """The dictionary (initialised from a sample of normalised inputs unless resuming) and the input scale."""
    from sae.dictionaries import build_training_sae, init_from_sample

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed % (1 << 32))
    sae = build_training_sae(spec, device=str(device))
    if not initialise:
        return sae, None
    sample = source.sample(config.init_rows, seed=config.seed)
    scale = input_scale(sample, source.d_in, unit_norm=spec.architecture.unit_norm_inputs)
    init_from_sample(sae, (sample * scale).to(device))
    return sae, scale


def _record(state: TrainState, out, tokens_now: int, window: int) -> dict:
    """Update the firing history and return the numbers of this step."""
    fired = out.fired.to(state.last_fired.device)
    state.last_fired[fired] = tokens_now
    dead = float(((tokens_now - state.last_fired) >= window).float().mean()) if tokens_now >= window else 0.0
    return {"step": state.step, "tokens": tokens_now, "loss": float(out.loss), "fvu": float(out.fvu),
            "l0": float(out.l0), "dead": dead}


def train(spec, config: TrainConfig, source: Source, checkpoint: Path | None = None,
          resume: dict | None = None, progress: bool = True, writer: bool = True,
          run_id: str | None = None) -> TrainResult:
    """Train a dictionary described by `spec` (a DictSpec) on `source`.

    `resume` is a payload from `load_checkpoint` (already checked with `check_resumable`). Under torchrun
    every rank calls this with the same arguments; `writer` is True on rank 0 only.
    """
    ctx = dist_context()
    device = _rank_device(pick_device(config.device), ctx)
    sae, scale = _build(spec, config, source, device, initialise=resume is None)
    optimizer = torch.optim.Adam(sae.parameters(), lr=config.lr)
    if resume is not None:
        state = _restore(resume, sae, optimizer)
    else:
        state = TrainState(run_id=run_id or uuid.uuid4().hex[:12], scale=scale)
        state.last_fired = torch.zeros(config.d_sae, dtype=torch.long)
    _sync_module(sae, ctx)
    _average_gradients(sae, ctx)
    stream = iter(BatchStream(source, config.batch, config.seed, position=state.position))
    bar = tqdm(total=config.total_steps * config.batch, initial=state.position, unit="tok", unit_scale=True,
               desc=f"train {config.arch}", disable=not (progress and writer), dynamic_ncols=True)
    started = time.perf_counter() - state.seconds
    saver = _Saver(checkpoint if writer else None, config, asdict_spec(spec),
                   saved_step=state.step if resume is not None else None)
    with _StopBetweenSteps(enabled=ctx.world == 1) as stop:
        for step in range(state.step, config.total_steps):
            _step(step, sae, optimizer, state, config, stream, ctx, device, bar, saver, started)
            if stop.requested:
                raise KeyboardInterrupt(_stopped(saver, sae, optimizer, state, bar))
    saver.maybe_save(sae, optimizer, state, final=True)  # a failure after training keeps the trained state
    bar.close()
    return TrainResult(sae=sae, state=state, config=config)


def _step(step: int, sae, optimizer, state: TrainState, config: TrainConfig, stream, ctx, device, bar,
          saver: "_Saver", started: float) -> None:
    """One optimizer step, its log row and progress, and a checkpoint when one is due."""
    from sae.dictionaries import train_step

    rows = _local_slice(next(stream), ctx)
    for group in optimizer.param_groups:
        group["lr"] = config.lr_at(step)
    with autocast(device):
        out = train_step(sae, (rows * state.scale).to(device), optimizer, step, config.total_steps)
    if not math.isfinite(float(out.loss)):
        raise RuntimeError(f"training diverged at step {step} (loss {float(out.loss)}); try a lower --lr")
    out = _reduce_step_output(out, ctx)
    _sync_module(sae, ctx)
    state.step, state.position = step + 1, state.position + config.batch
    row = _record(state, out, state.position, config.dead_window)
    if step % config.log_every == 0 or state.step == config.total_steps:
        state.log.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4g}", fvu=f"{row['fvu']:.3f}", l0=f"{row['l0']:.1f}",
                        dead=f"{row['dead']:.1%}", refresh=False)
    bar.update(config.batch)
    state.seconds = time.perf_counter() - started
    saver.maybe_save(sae, optimizer, state)
    crash_point("train.step")


class _StopBetweenSteps:
    """SIGINT while training (Ctrl+C, a cancel from the Jobs page) stops after the step in progress, with a
    checkpoint: an interrupt inside a step would leave weights, optimizer moments and state out of step, and no
    checkpoint could resume from there bit for bit. A second SIGINT stops at once. Only in the main thread of a
    single process (torchrun ranks must all stop at the same step)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_StopBetweenSteps":
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)


def _stopped(saver: "_Saver", sae, optimizer, state: TrainState, bar) -> str:
    """Checkpoint a run stopped by SIGINT; what it kept, in one line."""
    saver.maybe_save(sae, optimizer, state, final=True)
    bar.close()
    where = f"training stopped at step {state.step} of {saver.config.total_steps}"
    if saver.path is None or saver.last_step != state.step:
        return f"{where}; no checkpoint kept (--checkpoint-every 0)"
    return f"{where}; its checkpoint is kept in {saver.path.parent} (train --name {saver.path.parent.name} --resume " \
           "with the same options continues it)"


class _Saver:
    """When to checkpoint: every `checkpoint_every` steps, every CHECKPOINT_SECONDS, and at the end."""

    def __init__(self, path: Path | None, config: TrainConfig, spec: dict, saved_step: int | None):
        self.path, self.config, self.spec = path, config, spec
        self.last_step, self.last_time = saved_step, time.monotonic()

    def maybe_save(self, sae, optimizer, state: TrainState, final: bool = False) -> None:
        every = self.config.checkpoint_every
        if self.path is None or not every or self.last_step == state.step:
            return
        if final or state.step % every == 0 or time.monotonic() - self.last_time >= CHECKPOINT_SECONDS:
            save_checkpoint(self.path, sae, optimizer, state, self.config, self.spec)
            self.last_step, self.last_time = state.step, time.monotonic()


def asdict_spec(spec) -> dict:
    """A DictSpec as a plain dict (what a checkpoint records about the dictionary's shape)."""
    return asdict(spec) if hasattr(spec, "__dataclass_fields__") else dict(vars(spec))


# ---------------------------------------------------------------------------------------------- torchrun
# Data parallel: every rank reads the same seeded stream and trains on its own slice of each global batch;
# gradients are averaged as backward produces them (before clipping), so the update equals the
# single-process update on the whole batch, exactly so for per-row losses (relu, topk's main loss, mp).
# Rank 0 is the source of truth for non-gradient state
# (e.g. codebook dead-code resets, firing thresholds): its parameters and buffers are broadcast every step.

@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0


def init_distributed() -> DistContext:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if torch.cuda.is_available():  # NCCL runs each rank's collectives on its current device
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist_context()


def dist_context() -> DistContext:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    return torch.device("cuda", ctx.local_rank) if device.type == "cuda" and ctx.world > 1 else device


def _local_slice(rows: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    share = rows.shape[0] // ctx.world
    return rows[ctx.rank * share:(ctx.rank + 1) * share]


def _sync_module(module: torch.nn.Module, ctx: DistContext) -> None:
    if ctx.world > 1:
        import torch.distributed as dist

        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def _average_gradients(module: torch.nn.Module, ctx: DistContext) -> None:
    """All-reduce each gradient as soon as backward has accumulated it: before train_step clips the norm."""
    if ctx.world == 1:
        return
    import torch.distributed as dist

    def average(param: torch.Tensor) -> None:
        dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
        param.grad /= ctx.world

    for param in module.parameters():
        if param.requires_grad:
            param.register_post_accumulate_grad_hook(average)


def _reduce_step_output(out, ctx: DistContext):
    """Step numbers averaged over ranks, `fired` OR-ed, so logs and dead counts cover the global batch."""
    if ctx.world == 1:
        return out
    import torch.distributed as dist

    device = out.loss.device  # the rank's device (fired comes back on the CPU): NCCL reduces CUDA tensors only
    numbers = torch.tensor([float(out.loss), out.mse, out.fvu, out.l0], dtype=torch.float64, device=device)
    dist.all_reduce(numbers)
    numbers /= ctx.world
    fired = out.fired.to(device, torch.int32)
    dist.all_reduce(fired, op=dist.ReduceOp.MAX)
    return replace(out, loss=numbers[0].cpu(), mse=float(numbers[1]), fvu=float(numbers[2]), l0=float(numbers[3]),
                   fired=fired.cpu().bool())
