"""Where training activations come from: an activation cache, a user's [N, d] matrix file, or the model itself.

Every source cuts its training rows into chunks (cache shards, blocks of a file, groups of contexts run through
the model) and keeps a held-out tail (the last contexts or rows) that training never sees. `BatchStream`
turns chunks into shuffled batches whose order is a pure function of (seed, row position), so a resumed run
picks up at the exact row where a killed one stopped, loading only the chunk it needs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from store.errors import InputError

HOLDOUT = 0.05
"""Fraction of contexts (or rows) held out for evaluation, never trained on."""
FILE_CHUNK_ROWS = 32_768
MODEL_CHUNK_CONTEXTS = 64
MEMO_BYTES = 3 << 30
"""Chunks are kept in memory up to this size, so later epochs skip disk reads and model runs."""
MIN_ROWS = 20


class Source:
    """Base: subclasses set d_in, chunk_rows and implement _load and held_out_rows."""

    d_in: int
    chunk_rows: list[int]

    def __init__(self) -> None:
        self._memo: dict[int, Tensor] = {}

    @property
    def n_train(self) -> int:
        return sum(self.chunk_rows)

    def chunk(self, index: int) -> Tensor:
        """Training rows of chunk `index`, float32 [rows, d_in], in stored order."""
        if index in self._memo:
            return self._memo[index]
        rows = self._load(index).float()
        if (len(self._memo) + 1) * rows.numel() * 4 <= MEMO_BYTES:
            self._memo[index] = rows
        return rows

    def _load(self, index: int) -> Tensor:
        raise NotImplementedError

    def held_out_rows(self) -> Tensor:
        """The held-out rows [n, d_in], float32."""
        raise NotImplementedError

    def sample(self, n: int, seed: int = 0) -> Tensor:
        """n training rows drawn at random from the first chunks (for initialisation and scaling)."""
        parts, total = [], 0
        for index in range(len(self.chunk_rows)):
            parts.append(self.chunk(index))
            total += parts[-1].shape[0]
            if total >= n:
                break
        rows = torch.cat(parts)
        return rows[torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(seed))[:n]]


def holdout_count(n: int) -> int:
    return max(1, round(n * HOLDOUT))


class CacheSource(Source):
    """An activation cache folder: the last 5% of its contexts are held out; chunks are shards."""

    def __init__(self, folder: str | Path, skip_first: bool = True):
        from sae.activation_reader import ActivationReader

        super().__init__()
        self.reader = ActivationReader(folder)
        manifest = self.reader.manifest
        n_contexts = manifest.contexts_done
        if n_contexts < 2:
            raise InputError(f"activation cache {folder} holds {n_contexts} context; need at least 2")
        self.d_in, self.ctx, self.skip = manifest.d, manifest.ctx, int(skip_first)
        self.cut = n_contexts - holdout_count(n_contexts)
        """Contexts from `cut` on are held out."""
        self.shards = [i for i, s in enumerate(manifest.shards) if s.start_context < self.cut]
        self.chunk_rows = [self._train_contexts(i) * (self.ctx - self.skip) for i in self.shards]
        self._verified: set[int] = set()

    @property
    def held_out_contexts(self) -> range:
        return range(self.cut, self.reader.manifest.contexts_done)

    def _train_contexts(self, shard_index: int) -> int:
        shard = self.reader.manifest.shards[shard_index]
        return min(shard.n_contexts, self.cut - shard.start_context)

    def _contexts(self, shard_index: int) -> Tensor:
        """Shard as [contexts, ctx - skip, d]; its hash is checked on the first read only."""
        self.reader.verify = shard_index not in self._verified
        acts = self.reader.load_shard(shard_index)
        self._verified.add(shard_index)
        return acts.view(-1, self.ctx, self.d_in)[:, self.skip:]

    def _load(self, index: int) -> Tensor:
        shard = self.shards[index]
        return self._contexts(shard)[:self._train_contexts(shard)].reshape(-1, self.d_in)

    def held_out_rows(self) -> Tensor:
        parts = []
        for i, shard in enumerate(self.reader.manifest.shards):
            if shard.start_context + shard.n_contexts > self.cut:
                first = max(0, self.cut - shard.start_context)
                parts.append(self._contexts(i)[first:].reshape(-1, self.d_in))
        return torch.cat(parts).float()


def _open_matrix(path: Path):
    """A lazily sliceable 2-D matrix from .npy (memory-mapped) or .safetensors (one tensor)."""
    if path.suffix == ".npy":
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"{path} is not a readable .npy file ({exc})") from None
    if path.suffix != ".safetensors":
        raise InputError(f"activations file {path} must end in .npy or .safetensors")
    from safetensors import safe_open

    try:
        handle = safe_open(str(path), "pt")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise InputError(f"{path} is not a readable .safetensors file ({exc})") from None
    names = list(handle.keys())
    if len(names) != 1 and "activations" not in names:
        raise InputError(f"{path} holds {len(names)} tensors ({', '.join(names[:5])}); expected one [N, d] "
                         "matrix (or one named 'activations')")
    return handle.get_slice("activations" if "activations" in names else names[0])


def _shape_and_dtype(matrix) -> tuple[list[int], str]:
    if isinstance(matrix, np.ndarray):
        return list(matrix.shape), matrix.dtype.name
    return list(matrix.get_shape()), matrix.get_dtype()


def _rows(matrix, lo: int, hi: int) -> Tensor:
    if isinstance(matrix, np.ndarray):
        return torch.from_numpy(np.array(matrix[lo:hi], dtype=np.float32))  # a copy: the memmap is read-only
    return matrix[lo:hi].float()


class FileSource(Source):
    """A user's [N, d] float matrix (.npy or .safetensors); the last 5% of rows are held out."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise InputError(f"activations file {self.path} does not exist")
        self.matrix = _open_matrix(self.path)
        shape, dtype = _shape_and_dtype(self.matrix)
        if len(shape) != 2:
            raise InputError(f"{self.path} holds a tensor of shape {tuple(shape)}; expected a 2-D [N, d] matrix")
        if not any(dtype.lower().startswith(p) for p in ("float", "f", "bf")):
            raise InputError(f"{self.path} holds {dtype} values; expected floats")
        n, self.d_in = shape
        if n < MIN_ROWS or self.d_in < 1:
            raise InputError(f"{self.path} has shape {tuple(shape)}; need at least {MIN_ROWS} rows of d >= 1")
        self._check_finite(n)
        self.cut = n - holdout_count(n)
        self.chunk_rows = [min(FILE_CHUNK_ROWS, self.cut - lo) for lo in range(0, self.cut, FILE_CHUNK_ROWS)]

    def _check_finite(self, n: int) -> None:
        bad = 0
        for lo in range(0, n, FILE_CHUNK_ROWS):
            bad += int((~torch.isfinite(_rows(self.matrix, lo, lo + FILE_CHUNK_ROWS))).any(dim=1).sum())
        if bad:
            raise InputError(f"{self.path}: {bad} of {n} rows contain NaN or Inf values")

    def _load(self, index: int) -> Tensor:
        lo = index * FILE_CHUNK_ROWS
        return _rows(self.matrix, lo, lo + self.chunk_rows[index])

    def held_out_rows(self) -> Tensor:
        return _rows(self.matrix, self.cut, _shape_and_dtype(self.matrix)[0][0])


class ModelSource(Source):
    """Activations computed on the fly: run `model` on token contexts [n, ctx] up to `hook`.

    The last 5% of contexts are held out; chunks are groups of 64 contexts.
    """

    def __init__(self, model, hook: str, tokens: Tensor, skip_first: bool = True, batch: int = 16):
        from sae.models import check_hook, hook_output_dim

        super().__init__()
        check_hook(model, hook)
        if tokens.ndim != 2 or tokens.shape[0] < 2:
            raise InputError(f"streaming needs at least 2 contexts (got {tuple(tokens.shape)})")
        self.model, self.hook, self.tokens, self.batch = model, hook, tokens, batch
        self.skip = int(skip_first)
        self.d_in = hook_output_dim(model, hook)
        self.cut = tokens.shape[0] - holdout_count(tokens.shape[0])
        self.starts = list(range(0, self.cut, MODEL_CHUNK_CONTEXTS))
        self.chunk_rows = [(min(lo + MODEL_CHUNK_CONTEXTS, self.cut) - lo) * (tokens.shape[1] - self.skip)
                           for lo in self.starts]

    @property
    def held_out_contexts(self) -> range:
        return range(self.cut, self.tokens.shape[0])

    def _run(self, lo: int, hi: int) -> Tensor:
        from sae.activations import capture
        from sae.models import stop_layer

        device = next(self.model.parameters()).device
        stop_at, parts = stop_layer(self.model, self.hook), []
        for start in range(lo, hi, self.batch):
            ids = self.tokens[start:min(start + self.batch, hi)].to(device)
            with torch.inference_mode():
                acts = capture(self.model, self.hook, ids, stop_at).float().cpu()
            parts.append(acts.view(ids.shape[0], ids.shape[1], -1)[:, self.skip:].reshape(-1, self.d_in))
        return torch.cat(parts)

    def _load(self, index: int) -> Tensor:
        lo = self.starts[index]
        return self._run(lo, min(lo + MODEL_CHUNK_CONTEXTS, self.cut))

    def held_out_rows(self) -> Tensor:
        return self._run(self.cut, self.tokens.shape[0])


class BatchStream:
    """Endless shuffled batches of `batch` rows, starting at global row `position`.

    Epoch e visits the chunks in a seeded random order and each chunk's rows in a seeded random order;
    batches run across chunk and epoch boundaries, so the stream is fixed by (seed, position) alone.
    """

    def __init__(self, source: Source, batch: int, seed: int, position: int = 0):
        if source.n_train < 1:
            raise InputError("the activation source holds no training rows")
        self.source, self.batch, self.seed, self.position = source, batch, seed, position

    def _generator(self, *keys: int) -> torch.Generator:
        value = self.seed
        for key in keys:
            value = (value * 1_000_003 + key + 1) % (1 << 62)
        return torch.Generator().manual_seed(value)

    def _rows_from(self, position: int) -> Iterator[Tensor]:
        """Shuffled rows from `position` on, one piece per chunk."""
        total = self.source.n_train
        epoch, offset = divmod(position, total)
        while True:
            order = torch.randperm(len(self.source.chunk_rows), generator=self._generator(epoch))
            for index in order.tolist():
                rows = self.source.chunk_rows[index]
                if offset >= rows:
                    offset -= rows
                    continue
                perm = torch.randperm(rows, generator=self._generator(epoch, index))
                yield self.source.chunk(index)[perm[offset:]]
                offset = 0
            epoch += 1

    def __iter__(self) -> Iterator[Tensor]:
        pending: list[Tensor] = []  # pieces of the next batch, fewer than `batch` rows in all
        have = 0
        for piece in self._rows_from(self.position):
            start = 0
            while piece.shape[0] - start >= self.batch - have:
                take = self.batch - have
                out = torch.cat([*pending, piece[start:start + take]]) if pending else piece[start:start + take]
                pending, have, start = [], 0, start + take
                self.position += self.batch
                yield out
            if start < piece.shape[0]:
                pending.append(piece[start:])
                have += piece.shape[0] - start
