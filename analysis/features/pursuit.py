"""Matching-pursuit extras: at which pursuit step each atom is chosen, which atoms come before it, and the
pursuit of single tokens step by step (`pursuit_traces`, the prompt inspector's trace).

An atom chosen at step t of an input has "parent candidates": the atoms chosen at earlier steps of the same
input (in a hierarchy, a child is typically chosen after its parent, once the parent's part of the residual
is explained). Counting every (child, parent) pair exactly needs d_sae^2 counters, so:
- d_sae <= dense_max_d_sae: one dense int32 matrix (64 MB at 4096), exact;
- larger: sorted sparse (key, count) arrays of the pairs seen, exact until they hold more than `max_pairs`
  distinct pairs; then each child keeps only its `keep_per_child` most frequent parents (the rest are
  dropped, so later counts are lower bounds and rarely-seen pairs can be missed). `parents_exact` says
  whether that ever happened.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from analysis.features.streaming import rank_within_groups
from store.errors import InputError


@dataclass(frozen=True)
class MPStatsConfig:
    n_parents: int = 5
    """Parent candidates reported per atom."""
    dense_max_d_sae: int = 4096
    """Largest d_sae counted with a dense d_sae x d_sae matrix."""
    max_pairs: int = 4_000_000
    """Distinct (child, parent) pairs kept by the sparse counter before it prunes."""
    keep_per_child: int = 32
    """Parents each child keeps when the sparse counter prunes."""

    def __post_init__(self):
        if min(self.n_parents, self.max_pairs, self.keep_per_child) < 1:
            raise ValueError("n_parents, max_pairs and keep_per_child must be at least 1")


@dataclass
class MPStats:
    step_counts: np.ndarray
    """[d_sae, k] times each atom was chosen at each pursuit step."""
    parent_ids: np.ndarray
    """[d_sae, n_parents] most frequent earlier-step atoms, -1 pads."""
    parent_counts: np.ndarray
    parents_exact: bool


class MPStepAccumulator:
    def __init__(self, d_sae: int, k: int, cfg: MPStatsConfig = MPStatsConfig(),
                 device: str | torch.device = "cpu"):
        self.d_sae, self.k, self.cfg, self.device = d_sae, k, cfg, torch.device(device)
        self.steps = torch.zeros(d_sae * k, dtype=torch.long, device=self.device)
        self.dense = d_sae <= cfg.dense_max_d_sae
        if self.dense:
            self.pairs = torch.zeros(d_sae * d_sae, dtype=torch.int32, device=self.device)
        self.keys = torch.zeros(0, dtype=torch.long, device=self.device)  # child * d_sae + parent, sorted
        self.counts = torch.zeros(0, dtype=torch.long, device=self.device)
        self.exact = True
        i, j = torch.triu_indices(k, k, offset=1)  # parent step i < child step j
        self._parent_step, self._child_step = i.to(self.device), j.to(self.device)

    @torch.no_grad()
    def update(self, atom_ids: Tensor, n_steps: Tensor) -> None:
        """atom_ids [N, k] atom chosen at each step (-1 or anything past n_steps is ignored); n_steps [N]."""
        atom_ids, n_steps = atom_ids.to(self.device).long(), n_steps.to(self.device).long()
        if atom_ids.shape[1] != self.k:
            raise ValueError(f"expected atom_ids [N, {self.k}], got {tuple(atom_ids.shape)}")
        step = torch.arange(self.k, device=self.device)
        used = (step[None, :] < n_steps[:, None]) & (atom_ids >= 0)
        self.steps.index_add_(0, (atom_ids * self.k + step)[used], torch.ones_like(atom_ids[used]))
        child, parent = atom_ids[:, self._child_step], atom_ids[:, self._parent_step]  # [N, P]
        ok = used[:, self._child_step] & used[:, self._parent_step] & (child != parent)
        keys = child[ok] * self.d_sae + parent[ok]
        if self.dense:
            self.pairs.index_add_(0, keys, torch.ones_like(keys, dtype=torch.int32))
        else:
            self._add_sparse(keys)

    def _add_sparse(self, keys: Tensor) -> None:
        self.add_counts(keys, torch.ones_like(keys))

    def add_counts(self, keys: Tensor, counts: Tensor) -> None:
        """Add `counts` to the sparse pairs `keys` (child * d_sae + parent), e.g. another rank's; prunes as
        `update` does when the pairs outgrow max_pairs."""
        all_keys = torch.cat([self.keys, keys])
        all_counts = torch.cat([self.counts, counts])
        sorted_keys, order = torch.sort(all_keys)
        self.keys, inverse = torch.unique_consecutive(sorted_keys, return_inverse=True)
        self.counts = torch.zeros_like(self.keys).index_add_(0, inverse, all_counts[order])
        if len(self.keys) > self.cfg.max_pairs:
            self._prune()

    def _prune(self) -> None:
        """Keep each child's most frequent parents only (a heavy-hitter list; counts become lower bounds)."""
        self.exact = False
        _, entry = self._ranked(self.cfg.keep_per_child)
        keep = torch.zeros_like(self.keys, dtype=torch.bool)
        keep[entry] = True
        self.keys, self.counts = self.keys[keep], self.counts[keep]

    def _ranked(self, n: int) -> tuple[Tensor, Tensor]:
        """(rank within child, index of entry) of each child's n most frequent parents."""
        child = self.keys // self.d_sae
        # descending count, then ascending parent id, packed in one int64; counts are replaced by their
        # rank among the distinct counts so the packing fits whatever the counts grow to
        levels, level = torch.unique(self.counts, return_inverse=True)
        score = (len(levels) - 1 - level) * self.d_sae + self.keys % self.d_sae
        bits = max((len(levels) * self.d_sae).bit_length(), 1)
        order, rank = rank_within_groups(child, score, bits)
        sel = rank < n
        return rank[sel], order[sel]

    def finish(self) -> MPStats:
        n = self.cfg.n_parents
        if self.dense:
            nz = self.pairs.nonzero(as_tuple=True)[0]
            self.keys, self.counts = nz, self.pairs[nz].long()
        ids = np.full((self.d_sae, n), -1, dtype=np.int64)
        counts = np.zeros((self.d_sae, n), dtype=np.int64)
        if self.keys.numel():
            rank, entry = self._ranked(n)
            child = (self.keys[entry] // self.d_sae).cpu().numpy()
            ids[child, rank.cpu().numpy()] = (self.keys[entry] % self.d_sae).cpu().numpy()
            counts[child, rank.cpu().numpy()] = self.counts[entry].cpu().numpy()
        return MPStats(step_counts=self.steps.view(self.d_sae, self.k).cpu().numpy(),
                       parent_ids=ids, parent_counts=counts, parents_exact=self.exact)


@dataclass(frozen=True)
class PursuitTrace:
    """One input's pursuit, step by step (steps that added nothing are left out)."""

    atoms: list[int]
    """Atom chosen at each step, in the order pursuit chose them (an atom may come back)."""
    coeffs: list[float]
    """Coefficient added at each step."""
    residual_norms: list[float]
    """||x - reconstruction|| after each step: the input less b_dec and the first s terms."""
    input_norm: float
    """||x - b_dec||: the residual before the first step."""
    stop_reason: str
    """Why the pursuit stopped (sae.dictionaries.STOP_REASONS)."""


@torch.no_grad()
def pursuit_traces(sae, acts: Tensor) -> list[PursuitTrace]:
    """The pursuit of every row of acts [T, d_in] by an MP dictionary, as its encode runs it.

    Atoms and coefficients are the encoder's own (mp_encode_steps); the residual norms are recomputed from
    the decoder in float64, so they check the coefficients rather than repeat the encoder's arithmetic.
    """
    from sae.dictionaries import STOP_REASONS, arch_of, mp_encode_steps

    arch = arch_of(sae)
    if not arch.has_pursuit_steps:
        raise InputError(f"the pursuit trace applies to MP (matching pursuit) dictionaries, not {arch.name}")
    if acts.shape[-1] != sae.cfg.d_in:
        raise InputError(f"the dictionary reads d_in={sae.cfg.d_in}, the hook gives d={acts.shape[-1]}")
    x = acts.to(sae.W_dec.device, torch.float32)
    steps = mp_encode_steps(sae, x)
    sae_in = sae.process_sae_in(x).double()  # [T, d_in]: the input less b_dec, what pursuit starts from
    W = sae.W_dec.detach().double()  # [d_sae, d_in]
    traces = []
    for row in range(x.shape[0]):
        n = int(steps.n_steps[row])
        ids, coeffs = steps.atom_ids[row, :n], steps.step_coeffs[row, :n]
        used = ids >= 0
        ids, coeffs = ids[used], coeffs[used]
        partial = torch.cumsum(coeffs.double()[:, None] * W[ids], dim=0)  # [S, d_in] sum of the first s terms
        norms = (sae_in[row] - partial).norm(dim=1)
        traces.append(PursuitTrace(ids.tolist(), coeffs.double().tolist(), norms.tolist(),
                                   float(sae_in[row].norm()), STOP_REASONS[int(steps.stop_reason[row])]))
    return traces


def adaptive_stop(trace: PursuitTrace, threshold: float) -> int:
    """Steps of `trace` that adaptive inference with this residual threshold would take: it stops after the
    first step whose residual norm falls below the threshold or whose atom was already chosen (SAELens' rules,
    checked after each step as sae.dictionaries.pursuit does); all of them when neither happens. The steps
    before the stop are the same in both modes.

    InputError (one line) for a negative threshold.
    """
    from sae.dictionaries.mp import check_residual_threshold

    check_residual_threshold(threshold)
    seen: set[int] = set()
    for step, (atom, norm) in enumerate(zip(trace.atoms, trace.residual_norms), start=1):
        if norm < threshold or atom in seen:
            return step
        seen.add(atom)
    return len(trace.atoms)
