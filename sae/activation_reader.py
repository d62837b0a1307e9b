"""Read an activation cache back: whole contexts in order (analysis) or shuffled batches (training).

Memory stays bounded by a few shards whatever the cache size.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file

from sae.activations import Manifest, check_shard, read_manifest, shard_path
from store.errors import InputError


class ActivationReader:
    def __init__(self, folder: str | Path, verify: bool = True):
        self.folder = Path(folder)
        manifest = read_manifest(self.folder)
        if manifest is None:
            raise InputError(f"no activation cache in {self.folder} (run `sparsescope activations` first)")
        if not manifest.shards:
            raise InputError(f"activation cache {self.folder} holds no complete shard yet")
        self.manifest: Manifest = manifest
        self.verify = verify
        for shard in manifest.shards:  # sizes now; hashes as each shard is read
            check_shard(self.folder, shard, full=False)

    @property
    def d(self) -> int:
        return self.manifest.d

    @property
    def n_rows(self) -> int:
        return sum(s.rows for s in self.manifest.shards)

    def load_shard(self, index: int) -> torch.Tensor:
        """The shard's activations; with `verify`, InputError unless its hash matches the manifest and every value
        is finite (a NaN would poison a training run or an analysis without failing it)."""
        shard = self.manifest.shards[index]
        if self.verify:
            check_shard(self.folder, shard, full=True)
        acts = load_file(shard_path(self.folder, shard))["activations"]
        if self.verify and not bool(torch.isfinite(acts).all()):
            raise InputError(f"activation shard {shard_path(self.folder, shard)} holds NaN or infinite values; delete "
                             "the cache folder to rebuild it")
        return acts

    def contexts(self, max_contexts: int | None = None, first: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(context_ids [n], acts [n, ctx, d]) shard by shard, in corpus order, for contexts first .. max_contexts - 1
        (shards wholly before `first` are not read: a torchrun rank reads only its share)."""
        for index, shard in enumerate(self.manifest.shards):
            start = shard.start_context
            if max_contexts is not None and start >= max_contexts:
                return
            lo = max(first, start)
            hi = start + shard.n_contexts if max_contexts is None else min(start + shard.n_contexts, max_contexts)
            if hi <= lo:
                continue
            acts = self.load_shard(index).view(shard.n_contexts, self.manifest.ctx, self.d)[lo - start:hi - start]
            yield torch.arange(lo, hi), acts

    def batches(self, batch_size: int, shuffle: bool = True, seed: int = 0, skip_first: bool = True,
                buffer_shards: int = 2, epochs: int = 1) -> Iterator[torch.Tensor]:
        """Batches of [batch_size, d] rows; shuffled across `buffer_shards` shards at a time.

        skip_first drops position 0 of every context: the BOS / attention-sink token whose norm is
        tens of times larger than the rest and would dominate a reconstruction loss.
        """
        generator = torch.Generator().manual_seed(seed)
        carry = torch.empty(0, self.d)
        for _ in range(epochs):
            order = torch.randperm(len(self.manifest.shards), generator=generator) if shuffle \
                else torch.arange(len(self.manifest.shards))
            for lo in range(0, len(order), buffer_shards):
                rows = [self._rows(int(i), skip_first) for i in order[lo:lo + buffer_shards]]
                pool = torch.cat([carry, *rows])
                if shuffle:
                    pool = pool[torch.randperm(pool.shape[0], generator=generator)]
                usable = pool.shape[0] - pool.shape[0] % batch_size
                yield from pool[:usable].split(batch_size)
                carry = pool[usable:]
        if carry.shape[0]:
            yield carry

    def _rows(self, index: int, skip_first: bool) -> torch.Tensor:
        acts = self.load_shard(index)
        if not skip_first:
            return acts
        ctx = self.manifest.ctx
        return acts.view(-1, ctx, self.d)[:, 1:].reshape(-1, self.d)

    def sample(self, n: int, seed: int = 0, skip_first: bool = True) -> torch.Tensor:
        """About n rows drawn from the first shards (for initialisation and held-out checks)."""
        out, total = [], 0
        for index in range(len(self.manifest.shards)):
            rows = self._rows(index, skip_first)
            out.append(rows)
            total += rows.shape[0]
            if total >= n:
                break
        rows = torch.cat(out)
        pick = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
        return rows[pick]
