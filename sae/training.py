"""The training loop around `sae.dictionaries.train_step`: normalisation, schedule, checkpoints, resume, DDP.

A run is a pure function of (config, source, seed): the data order comes from `BatchStream` (seeded, addressed
by row position) and a checkpoint holds everything else that changes while training (weights, optimizer
moments, step, row position, RNG states, feature firing history, log rows). Resuming from a checkpoint
therefore replays the same steps an uninterrupted run would take.
"""
from __future__ import annotations

import math
import os
import pickle
import random
import time
import uuid
import zipfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sae.device import autocast, pick_device
from store.errors import InputError
from sae.sources import BatchStream, Source

CHECKPOINT_VERSION = 1
RESUMABLE_CHANGES = ("device", "checkpoint_every", "log_every")
"""Config fields a resumed run may change: they do not alter the numbers it computes."""


@dataclass(frozen=True)
class TrainConfig:
    arch: str
    """Architecture name, one of sae.dictionaries.ARCHITECTURES."""
    d_sae: int
    """Number of features in the dictionary."""
    k: int | None = None
    """Active features per token (topk, batchtopk, mp steps, codebook codes)."""
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
    """Steps between checkpoints (0: only the final state is kept)."""
    log_every: int = 10
    """Steps between training_log rows."""
    dead_window: int = 250_000
    """A feature is counted dead in the progress bar when it has not fired for this many tokens."""
    init_rows: int = 16_384
    """Rows sampled before training to estimate the input scale and initialise the dictionary."""
    device: str | None = None
    """cuda, mps or cpu; None picks the best available."""

    def __post_init__(self):
        if self.d_sae <= 0:
            raise ValueError(f"--d-sae must be positive (got {self.d_sae})")
        if self.k is not None and not 0 < self.k <= self.d_sae:
            raise ValueError(f"--k must be between 1 and --d-sae ({self.d_sae}), got {self.k}")
        if self.l1 is not None and (self.l1 < 0 or not math.isfinite(self.l1)):
            raise ValueError(f"--l1 must be a non-negative number (got {self.l1})")
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


def input_scale(sample: torch.Tensor, d_in: int) -> float:
    """Factor that brings the mean row norm to sqrt(d_in) (SAELens' convention: unit mean square entry)."""
    mean_norm = float(sample.norm(dim=-1).mean())
    if not math.isfinite(mean_norm) or mean_norm <= 0:
        raise InputError(f"cannot normalise activations with mean norm {mean_norm}")
    return math.sqrt(d_in) / mean_norm


# ---------------------------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: Path, sae, optimizer, state: TrainState, config: TrainConfig, spec: dict) -> None:
    """Write a checkpoint atomically: a killed writer leaves the previous checkpoint intact."""
    payload = {
        "version": CHECKPOINT_VERSION, "config": asdict(config), "spec": spec, "state": asdict(state),
        "sae": sae.state_dict(), "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint; InputError (one line) when it is missing, truncated or not ours."""
    if not path.is_file():
        raise InputError(f"no checkpoint to resume at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        raise InputError(f"checkpoint {path} is truncated or corrupted ({exc.__class__.__name__}); "
                         "delete it to start over") from None
    if not isinstance(payload, dict) or payload.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"checkpoint {path} is not a SparseScope v{CHECKPOINT_VERSION} checkpoint")
    return payload


def check_resumable(payload: dict, config: TrainConfig, spec: dict, path: Path) -> None:
    """InputError unless the checkpoint was written by a run with the same settings."""
    saved = payload["config"]
    differ = [f.name for f in fields(config)
              if f.name not in RESUMABLE_CHANGES and saved.get(f.name) != getattr(config, f.name)]
    differ += [key for key in ("arch", "d_in", "d_sae", "k") if payload["spec"].get(key) != spec.get(key)]
    if differ:
        raise InputError(f"checkpoint {path} was written with different settings ({', '.join(sorted(set(differ)))}); "
                         "resume with the original options or delete it")


def _restore(payload: dict, sae, optimizer) -> TrainState:
    sae.load_state_dict(payload["sae"])
    optimizer.load_state_dict(payload["optimizer"])
    rng = payload["rng"]
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
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
    scale = input_scale(sample, source.d_in)
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
    from sae.dictionaries import train_step

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
    for step in range(state.step, config.total_steps):
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
        if writer and checkpoint is not None and config.checkpoint_every and state.step % config.checkpoint_every == 0:
            save_checkpoint(checkpoint, sae, optimizer, state, config, asdict_spec(spec))
    bar.close()
    return TrainResult(sae=sae, state=state, config=config)


def asdict_spec(spec) -> dict:
    """A DictSpec as a plain dict (what a checkpoint records about the dictionary's shape)."""
    return asdict(spec) if hasattr(spec, "__dataclass_fields__") else dict(vars(spec))


# ---------------------------------------------------------------------------------------------- torchrun
# Data parallel: every rank reads the same seeded stream and trains on its own slice of each global batch;
# gradients are averaged as backward produces them (before clipping), so the update equals the
# single-process update on the whole batch, exactly so for per-row losses (relu, topk's main loss, mp). Rank 0 is the source of truth for non-gradient state
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
