"""One streaming pass over a corpus' feature activations: everything a feature page shows about its firings.

Memory is fixed by (d_sae, config), never by corpus size:
  sums, counts, max                d_sae * 24 B
  fine histogram                   d_sae * n_fine * 8 B           (n_fine = 514 by default: 19 MB at 4608)
  top-N examples                   d_sae * N * (4W + 32) B         (W = 2 * window + 1)
  quantile samples                 d_sae * 2QS * ceil(c N) * (4W + 32) B  (S = band_cells, c = cell_capacity:
                                                                   369 MB at d_sae 4608, defaults)
  co-occurrence                    d_sae^2 * 4 B                   (skipped above cooc_max_d_sae)

How each statistic stays exact in one pass:
- count, density, mean, max: running sums (float64) and a running max.
- histogram: counts on a fixed fine log grid (analysis.features.streaming.LogGrid); each feature's final bins are runs
  of whole fine bins over its own non-zero range, so no count is ever split or estimated.
- top-N: a merge of the running top-N with each batch's candidates that beat the current N-th value.
- quantile bands: band b of a feature holds activations in (b/Q, (b+1)/Q] x its final max, unknown
  mid-stream. Samples are kept per cell of a fixed per-feature grid that only ever merges whole cells, and
  assigned to bands at the end; each band's sample is exactly its firings with the smallest hash keys (keys
  do not depend on activations, so the sample is uniform within the band). A band can hold fewer than N
  when a cell straddling its edge is much denser than the band (analysis.features.bands has the details).
- windows: the feature's activations on the W tokens around a kept firing are gathered when it is kept,
  since the activations are gone after `update` returns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from analysis.features.cooccurrence import CooccurrenceCounter
from analysis.features.bands import BandSampler
from analysis.features.slots import Candidates, SlotTable
from analysis.features.streaming import LogGrid, find_firings, token_hash, value_score


@dataclass(frozen=True)
class StatsConfig:
    n_examples: int = 20
    """Top-activating examples kept per feature, and samples kept per quantile band."""
    n_quantiles: int = 10
    """Number of activation bands, each a 1/Q slice of the feature's max activation."""
    band_cells: int = 4
    """Cells per band on the finest sampling grid (see analysis.features.bands); more cells make fuller
    band samples when densities vary sharply, at proportional memory."""
    cell_capacity: float = 0.5
    """Samples each cell holds, as a fraction of n_examples. Memory of the band samples is
    d_sae * 2 * n_quantiles * band_cells * ceil(cell_capacity * n_examples) slots."""
    window: int = 8
    """Tokens of context stored on each side of an example (the window is shifted inside the context)."""
    hist_bins: int = 40
    """Most bins of a feature's histogram of non-zero activations (log-spaced)."""
    hist_range: tuple[float, float] = (1e-4, 1e4)
    """Range of the fixed fine log grid; activations outside land in an underflow or an overflow bin."""
    hist_per_decade: int = 64
    """Fine bins per decade; a feature's final bin edges are multiples of this resolution."""
    n_neighbors: int = 10
    """Nearest features by decoder cosine."""
    n_cooc: int = 10
    """Co-firing features kept per feature, ranked by Jaccard index."""
    cooc_max_d_sae: int = 8192
    """Largest d_sae for which co-occurrence is counted (its matrix needs d_sae^2 * 4 bytes)."""
    skip_first: int = 0
    """Positions at the start of each context left out of every statistic (1 drops a BOS token)."""
    seed: int = 0
    """Salt of the hash keys that pick the quantile samples."""

    def __post_init__(self):
        for name in ("n_examples", "n_quantiles", "hist_bins", "hist_per_decade"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.band_cells < 1 or self.cell_capacity <= 0:
            raise ValueError("band_cells must be at least 1 and cell_capacity positive")
        if self.window < 0 or self.skip_first < 0 or self.n_neighbors < 0 or self.n_cooc < 0:
            raise ValueError("window, skip_first, n_neighbors and n_cooc must be non-negative")


@dataclass
class ExampleArrays:
    """Stored examples, shape [d_sae, *slots]; a slot is empty where context_id == -1."""

    activation: np.ndarray
    context_id: np.ndarray
    position: np.ndarray
    window_start: np.ndarray
    window: np.ndarray
    """[d_sae, *slots, W] activations of the feature on the window's tokens; NaN past the context's end."""


@dataclass
class FeatureStats:
    """Result of a pass, as numpy arrays indexed by feature."""

    n_tokens: int
    count: np.ndarray
    """[d_sae] tokens on which the feature fires (activation > 0)."""
    density: np.ndarray
    mean_act: np.ndarray
    """[d_sae] mean activation over the tokens where it fires (0 for a dead feature)."""
    max_act: np.ndarray
    hist_lo: np.ndarray
    """[d_sae, hist_bins] bin i covers [hist_lo, hist_hi); unused bins have count 0."""
    hist_hi: np.ndarray
    hist_count: np.ndarray
    top: ExampleArrays
    """Slots [n_examples], best first."""
    quantiles: ExampleArrays
    """Slots [n_quantiles, n_examples]; band b covers (b/Q, (b+1)/Q] x max_act."""
    cooc_ids: np.ndarray | None
    """[d_sae, n_cooc] co-firing features (-1 pads), None where d_sae > cooc_max_d_sae."""
    cooc_jaccard: np.ndarray | None


class FeatureStatsAccumulator:
    """Feed activations batch by batch with `update`, then call `finish` once."""

    def __init__(self, d_sae: int, cfg: StatsConfig = StatsConfig(), device: str | torch.device = "cpu"):
        self.d_sae, self.cfg, self.device = d_sae, cfg, torch.device(device)
        self.n_tokens = 0
        self.count = torch.zeros(d_sae, dtype=torch.long, device=self.device)
        self.total = torch.zeros(d_sae, dtype=torch.float64, device=self.device)
        self.max = torch.zeros(d_sae, dtype=torch.float32, device=self.device)
        self.grid = LogGrid(*cfg.hist_range, cfg.hist_per_decade)
        self.hist = torch.zeros(d_sae * self.grid.n_bins, dtype=torch.long, device=self.device)
        width = 2 * cfg.window + 1
        self.top = SlotTable(d_sae, cfg.n_examples, width, score_bits=31, device=self.device)
        cell_cap = max(1, math.ceil(cfg.n_examples * cfg.cell_capacity))
        self.bands = BandSampler(d_sae, cfg.n_quantiles, cfg.band_cells, cell_cap, width, cfg.seed,
                                 self.device)
        self.cooc = CooccurrenceCounter(d_sae, self.device) if d_sae <= cfg.cooc_max_d_sae else None

    @torch.no_grad()
    def update(self, acts: Tensor, context_ids: Tensor) -> None:
        """acts [n_ctx, ctx_len, d_sae] feature activations; context_ids [n_ctx] their ids in the corpus."""
        n_ctx, ctx_len, d_sae = acts.shape
        if d_sae != self.d_sae or context_ids.shape != (n_ctx,):
            raise ValueError(f"expected acts [n_ctx, ctx_len, {self.d_sae}] and context_ids [n_ctx], "
                             f"got {tuple(acts.shape)} and {tuple(context_ids.shape)}")
        flat = acts.to(self.device, torch.float32).reshape(n_ctx * ctx_len, d_sae).contiguous()  # (token, feature)
        self.n_tokens += n_ctx * max(ctx_len - self.cfg.skip_first, 0)
        fired = find_firings(flat, ctx_len, self.cfg.skip_first)
        token, feature, value = fired.token, fired.feature, fired.value
        position = token % ctx_len
        ctx = context_ids.to(self.device).long()[token // ctx_len]
        self._update_moments(feature, value)
        windows = _window_fetcher(flat, token, feature, ctx_len, self.cfg.window)
        self._update_top(feature, value, ctx, position, windows)
        positions = torch.arange(ctx_len, device=self.device)
        token_h = token_hash(context_ids.to(self.device).long()[:, None], positions[None, :], self.cfg.seed)
        self.bands.update(feature, value, ctx, position, token_h.view(-1)[token], self.max, windows)
        if self.cooc is not None:
            self.cooc.update(token, feature)

    def _update_moments(self, feature: Tensor, value: Tensor) -> None:
        self.count.index_add_(0, feature, torch.ones_like(feature))
        self.total.index_add_(0, feature, value.double())
        self.max.scatter_reduce_(0, feature, value, reduce="amax")
        fine = self.grid.index(value)
        self.hist.index_add_(0, feature * self.grid.n_bins + fine, torch.ones_like(fine))

    def _update_top(self, feature: Tensor, value: Tensor, ctx: Tensor, position: Tensor, windows) -> None:
        score = value_score(value)
        beats = score < self.top.worst[feature]  # most firings fail this once the table has filled
        idx = beats.nonzero(as_tuple=True)[0]
        self.top.merge(Candidates(group=feature[idx], score=score[idx], value=value[idx],
                                  context_id=ctx[idx], position=position[idx],
                                  windows=lambda j: windows(idx[j])))

    def finish(self) -> FeatureStats:
        cfg = self.cfg
        count = self.count.cpu().numpy()
        n = max(self.n_tokens, 1)
        mean = np.where(count > 0, self.total.cpu().numpy() / np.maximum(count, 1), 0.0)
        lo, hi, hist_count = self.grid.rebin(self.hist.view(self.d_sae, -1).cpu().numpy(), cfg.hist_bins)
        cooc_ids = cooc_jac = None
        if self.cooc is not None:
            ids, jac = self.cooc.top_jaccard(self.count, cfg.n_cooc)
            cooc_ids, cooc_jac = ids.numpy(), jac.numpy()
        return FeatureStats(
            n_tokens=self.n_tokens, count=count, density=count / n, mean_act=mean,
            max_act=self.max.cpu().numpy(), hist_lo=lo, hist_hi=hi, hist_count=hist_count,
            top=_arrays(self.top.ordered()),
            quantiles=_arrays(self.bands.finish(self.max, cfg.n_examples)),
            cooc_ids=cooc_ids, cooc_jaccard=cooc_jac)


def _window_fetcher(flat: Tensor, token: Tensor, feature: Tensor, ctx_len: int, half: int):
    """Gather the feature's activations on the 2*half+1 tokens around chosen firings.

    The window is shifted to stay inside the context (so an example near the start still shows
    2*half+1 tokens); where the context is shorter than that, the tail is NaN.
    """
    width = 2 * half + 1
    offsets = torch.arange(width, device=flat.device)

    def fetch(idx: Tensor) -> tuple[Tensor, Tensor]:
        tok, feat = token[idx], feature[idx]
        pos = tok % ctx_len
        start = (pos - half).clamp(min=0).clamp(max=max(ctx_len - width, 0))
        cols = start[:, None] + offsets[None, :]  # [m, W] positions in the context
        inside = cols < ctx_len
        rows = (tok - pos)[:, None] + cols.clamp(max=ctx_len - 1)
        vals = flat.view(-1).take(rows * flat.shape[1] + feat[:, None])  # 1-D take: faster than 2-D indexing
        return start, torch.where(inside, vals, torch.full_like(vals, math.nan))

    return fetch


def _arrays(fields: dict[str, Tensor]) -> ExampleArrays:
    f = {name: t.cpu().numpy() for name, t in fields.items()}
    return ExampleArrays(activation=f["value"], context_id=f["context_id"], position=f["position"],
                         window_start=f["window_start"], window=f["window"])
