"""Activation cache: float32 safetensors shards plus a JSON manifest, written as the model runs.

A shard holds whole contexts (rows = contexts x ctx, in order), so a row maps back to (context, position).
Every shard and the manifest are written to a temp file and renamed (the manifest fsynced), and the manifest
is rewritten after each shard: a killed run resumes from its last complete shard (its temp files are swept on
the next run), a finished run is reused, and a corrupted shard is caught by its recorded size and SHA-256
before anything reads it. Shard names in a manifest are plain file names inside the cache folder.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from sae.models import stop_layer
from store.errors import InputError
from store.faults import crash_point
from store.paths import confined, staging_file, sweep_staging, write_durable

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
TokenSource = Callable[[int, int], list[list[int]]]
"""Returns the token ids of contexts start..stop-1."""


@dataclass
class Shard:
    file: str
    start_context: int
    n_contexts: int
    rows: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    model: str
    hook: str
    corpus: str
    d: int
    ctx: int
    n_contexts: int
    """Contexts the cache is meant to hold when complete."""
    shards: list[Shard] = field(default_factory=list)
    complete: bool = False
    dtype: str = "float32"
    version: int = FORMAT_VERSION
    corpus_fingerprint: str | None = None
    """Fingerprint of the corpus' contexts it was made from (store.corpora); None in caches made before
    fingerprints, which therefore match no corpus."""

    @property
    def contexts_done(self) -> int:
        return sum(s.n_contexts for s in self.shards)

    @property
    def n_tokens(self) -> int:
        return self.contexts_done * self.ctx


def cache_name(model: str, hook: str, corpus: str) -> str:
    return f"{model}__{hook}__{corpus}".replace("/", "_")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest in `folder`, None if there is none; InputError if it is corrupted."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        shards = [Shard(**s) for s in raw.pop("shards")]
        manifest = Manifest(**raw, shards=shards)
    except (json.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
        raise InputError(f"activation cache manifest {path} is corrupted ({exc.__class__.__name__}); "
                         "delete the folder to rebuild it") from None
    if manifest.version != FORMAT_VERSION:
        raise InputError(f"activation cache {folder} has format {manifest.version}, expected {FORMAT_VERSION}")
    for shard in manifest.shards:
        shard_path(folder, shard)
    return manifest


def shard_path(folder: Path, shard: Shard) -> Path:
    """The shard's file, confined to the cache folder: a name with '/', '..' or a link out is refused."""
    try:
        return confined(folder, shard.file, "activation shard")
    except InputError as exc:
        raise InputError(f"activation cache manifest {Path(folder) / MANIFEST} is corrupted: {exc}") from None


def check_shard(folder: Path, shard: Shard, full: bool = True) -> None:
    """Raise InputError when a shard is missing, truncated, or (full=True) its hash differs."""
    path = shard_path(folder, shard)
    if not path.is_file():
        raise InputError(f"activation shard {path} is missing")
    if path.stat().st_size != shard.bytes:
        raise InputError(f"activation shard {path} is corrupted: {path.stat().st_size} bytes, "
                         f"manifest says {shard.bytes}")
    if full and _sha256(path) != shard.sha256:
        raise InputError(f"activation shard {path} is corrupted: SHA-256 differs from the manifest")


def capture(model, hook: str, tokens: torch.Tensor, stop_at: int | None) -> torch.Tensor:
    """Activations at `hook` flattened per token: [batch * pos, d] (hook_z heads head-major); the forward stops
    before block `stop_at` (the block after the hook's; None runs the whole model)."""
    return capture_many(model, [hook], tokens, stop_at)[hook]


def capture_many(model, hooks: list[str], tokens: torch.Tensor, stop_at: int | None) -> dict[str, torch.Tensor]:
    """Activations at each hook flattened per token: [batch * pos, d] (hook_z heads head-major), from one forward
    that stops before block `stop_at` (the block after the deepest hook's; None runs the whole model)."""
    out: dict[str, torch.Tensor] = {}

    def save(act, hook):
        out[hook.name] = act.detach()

    model.run_with_hooks(tokens, fwd_hooks=[(h, save) for h in hooks], stop_at_layer=stop_at, return_type=None)
    return {h: out[h].reshape(out[h].shape[0] * out[h].shape[1], -1) for h in hooks}


def _deepest(model, hooks: list[str]) -> int | None:
    """stop_at_layer that reaches every hook (None when one needs the whole model)."""
    stops = [stop_layer(model, h) for h in hooks]
    return None if None in stops else max(stops)


def _start(folder: Path, want: Manifest) -> Manifest:
    """Resume the manifest in `folder` when it describes the same cache, else start empty."""
    old = read_manifest(folder)
    if old is None:
        return want
    same = (old.model, old.hook, old.corpus, old.d, old.ctx) == (want.model, want.hook, want.corpus,
                                                                  want.d, want.ctx)
    if not same:
        raise InputError(f"{folder} holds a different activation cache ({old.model} {old.hook} "
                         f"{old.corpus}); delete it or choose another workspace")
    if want.corpus_fingerprint is not None and old.corpus_fingerprint != want.corpus_fingerprint:
        raise InputError(f"{folder} holds activations of other text than corpus {old.corpus!r} holds now; "
                         "delete it to rebuild it")
    for shard in old.shards:
        check_shard(folder, shard, full=True)
    old.n_contexts = max(old.n_contexts, want.n_contexts)
    old.complete = old.contexts_done >= old.n_contexts
    return old


def write_cache(model, hook: str, folder: Path, tokens_of: TokenSource, manifest: Manifest,
                batch: int = 32, shard_contexts: int = 256, progress: bool = True) -> Manifest:
    """Run `model` up to `hook` over contexts 0..manifest.n_contexts-1 and write the cache into `folder`."""
    return write_caches(model, [(hook, folder, manifest)], tokens_of, batch, shard_contexts, progress)[0]


def write_caches(model, targets: list[tuple[str, Path, Manifest]], tokens_of: TokenSource, batch: int = 32,
                 shard_contexts: int = 256, progress: bool = True) -> list[Manifest]:
    """Write several hooks' caches (hook, folder, manifest) from one forward pass per batch, run as far as the
    deepest hook still needs. Each cache resumes from its own last complete shard: a range of contexts runs
    the model for the caches that lack it only."""
    manifests = []
    for hook, folder, want in targets:
        folder.mkdir(parents=True, exist_ok=True)
        sweep_staging(folder)  # temp files of a killed run
        manifests.append(_start(folder, want))
    device = next(model.parameters()).device
    ctx = manifests[0].ctx
    bar = tqdm(total=max(m.n_contexts for m in manifests) * ctx, initial=min(m.n_tokens for m in manifests),
               unit="tok", unit_scale=True, desc="activations " + ", ".join(h for h, _, _ in targets),
               disable=not progress)
    while pending := [i for i, m in enumerate(manifests) if m.contexts_done < m.n_contexts]:
        start = min(manifests[i].contexts_done for i in pending)
        now = [i for i in pending if manifests[i].contexts_done == start]
        stop = min(start + shard_contexts, *(manifests[i].n_contexts for i in now))
        hooks = [targets[i][0] for i in now]
        stop_at = _deepest(model, hooks)
        parts: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
        for lo in range(start, stop, batch):
            ids = torch.tensor(tokens_of(lo, min(lo + batch, stop)), dtype=torch.long, device=device)
            with torch.inference_mode():
                for h, act in capture_many(model, hooks, ids, stop_at).items():
                    parts[h].append(act.float().cpu())
            bar.update(ids.numel())
        for i in now:
            hook, folder, _ = targets[i]
            manifest = manifests[i]
            manifest.shards.append(_write_shard(folder, torch.cat(parts.pop(hook)), start, stop - start))
            manifest.complete = manifest.contexts_done >= manifest.n_contexts
            write_durable(folder / MANIFEST, json.dumps(asdict(manifest), indent=1))
        crash_point("activations.shard")
    bar.close()
    for (_, folder, _), manifest in zip(targets, manifests):
        if not (folder / MANIFEST).exists():  # a finished cache found on disk: nothing to write
            write_durable(folder / MANIFEST, json.dumps(asdict(manifest), indent=1))
    return manifests


def _write_shard(folder: Path, acts: torch.Tensor, start: int, n_contexts: int) -> Shard:
    if not bool(torch.isfinite(acts).all()):  # e.g. an overflow in half precision: never cache it as valid
        last = start + n_contexts - 1
        raise InputError(f"the model produced NaN or infinite activations in contexts {start}..{last}")
    name = f"shard_{start:08d}.safetensors"
    tmp = staging_file(folder, name)
    try:
        save_file({"activations": acts.contiguous()}, tmp)
        os.replace(tmp, folder / name)
    finally:
        tmp.unlink(missing_ok=True)
    path = folder / name
    return Shard(file=name, start_context=start, n_contexts=n_contexts, rows=acts.shape[0],
                 bytes=path.stat().st_size, sha256=_sha256(path))
