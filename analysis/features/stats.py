"""One streaming pass over a corpus' feature activations: everything a feature page shows about its firings.

The pass keeps running moments and a fine histogram per feature, and logs every firing (16 bytes each,
analysis.features.firing_log); what needs the final max or all of a token's firings is drawn from the log at the
end. Memory (d_sae = 65,536, 200k tokens at L0 = 32 in brackets):
  sums, counts, max                d_sae * 20 B                                     (1.3 MB)
  fine histogram                   d_sae * n_fine * 8 B (n_fine = 514 by default)   (270 MB)
  firing log                       16 B per firing: tokens * L0 * 16 B              (100 MB)
  at the end, examples             d_sae * (1 + Q) * N * 16 B of slots, plus W * 4 B per filled slot for its window
                                   (230 MB + 4 B * W per example actually stored: every firing of a rare feature)
  at the end, co-occurrence        ~40 B per pair key of one block, at most PAIR_CHUNK keys (~300 MB)
Nothing grows as d_sae^2, nor as d_sae x slots x window; the log grows with the corpus (at 16 B per firing,
the compact form of what exact co-occurrence must see: every firing, not every pair).

How each statistic stays exact:
- count, density, mean, max: running sums (float64) and a running max.
- histogram: counts on a fixed fine log grid (analysis.features.streaming.LogGrid); each feature's final bins are runs
  of whole fine bins over its own non-zero range, so no count is ever split or estimated.
- top-N and quantile bands (band b holds activations in (b/Q, (b+1)/Q] x the final max): selected from the log
  once the max is known, the band sample being the band's firings with the smallest hash keys, a uniform sample
  (analysis.features.examples); the windows of the kept examples are read back from the log.
- co-occurrence: counted from the log, sparsely, block by block (analysis.features.cooccurrence).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from analysis.features.cooccurrence import CooccurrenceCounter
from analysis.features.examples import ExampleArrays, select_examples
from analysis.features.firing_log import FiringLog
from analysis.features.streaming import LogGrid, find_firings

__all__ = ["ExampleArrays", "FeatureStats", "FeatureStatsAccumulator", "StatsConfig"]

REBIN_BLOCK = 8192
"""Features rebinned at a time at the end (the temporaries of a block are ~n_fine * 24 B per feature)."""


@dataclass(frozen=True)
class StatsConfig:
    n_examples: int = 20
    """Top-activating examples kept per feature, and samples kept per quantile band."""
    n_quantiles: int = 10
    """Number of activation bands, each a 1/Q slice of the feature's max activation."""
    band_cells: int = 4
    """Unused: band samples are now drawn exactly from the firing log at the end (no sampling grid); kept so
    that callers and saved configs that set it stay valid."""
    cell_capacity: float = 0.5
    """Unused, as band_cells."""
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
    cooc_max_d_sae: int | None = None
    """None (the default): co-occurrence is counted at every width. A number: leave it out on purpose above
    that d_sae (the analysis records whether it was counted)."""
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

    def counts_cooccurrence(self, d_sae: int) -> bool:
        return self.cooc_max_d_sae is None or d_sae <= self.cooc_max_d_sae


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
    """[d_sae, n_cooc] co-firing features (-1 pads); None where StatsConfig.cooc_max_d_sae left it out."""
    cooc_jaccard: np.ndarray | None


class FeatureStatsAccumulator:
    """Feed activations batch by batch with `update`, then call `finish` once (it releases what it has read)."""

    def __init__(self, d_sae: int, cfg: StatsConfig = StatsConfig(), device: str | torch.device = "cpu"):
        self.d_sae, self.cfg, self.device = d_sae, cfg, torch.device(device)
        self.n_tokens = 0
        self.ctx_len: int | None = None
        self.count = torch.zeros(d_sae, dtype=torch.long, device=self.device)
        self.total = torch.zeros(d_sae, dtype=torch.float64, device=self.device)
        self.max = torch.zeros(d_sae, dtype=torch.float32, device=self.device)
        self.grid = LogGrid(*cfg.hist_range, cfg.hist_per_decade)
        self.hist = torch.zeros(d_sae * self.grid.n_bins, dtype=torch.long, device=self.device)
        self.log = FiringLog(d_sae)
        """Firings at the positions the statistics count."""
        self.edge_log = FiringLog(d_sae)
        """Firings at the first skip_first positions: windows show them, nothing else counts them."""
        self.cooc = CooccurrenceCounter(d_sae, log=self.log) if cfg.counts_cooccurrence(d_sae) else None

    @torch.no_grad()
    def update(self, acts: Tensor, context_ids: Tensor) -> None:
        """acts [n_ctx, ctx_len, d_sae] feature activations; context_ids [n_ctx] their ids in the corpus."""
        n_ctx, ctx_len, d_sae = acts.shape
        if d_sae != self.d_sae or context_ids.shape != (n_ctx,):
            raise ValueError(f"expected acts [n_ctx, ctx_len, {self.d_sae}] and context_ids [n_ctx], "
                             f"got {tuple(acts.shape)} and {tuple(context_ids.shape)}")
        if self.ctx_len not in (None, ctx_len):
            raise ValueError(f"every batch must have contexts of {self.ctx_len} tokens, got {ctx_len}")
        self.ctx_len = ctx_len
        skip = min(self.cfg.skip_first, ctx_len)
        acts = acts.to(self.device, torch.float32)
        flat = acts.reshape(n_ctx * ctx_len, d_sae).contiguous()  # (token, feature)
        self.n_tokens += n_ctx * (ctx_len - skip)
        fired = find_firings(flat, ctx_len, skip)
        self._update_moments(fired.feature, fired.value)
        first_token = context_ids.to(self.device).long() * ctx_len  # global id of each context's position 0
        self.log.append(first_token[fired.token // ctx_len] + fired.token % ctx_len, fired.feature, fired.value)
        if skip:
            edge = find_firings(acts[:, :skip].reshape(n_ctx * skip, d_sae).contiguous(), skip, 0)
            self.edge_log.append(first_token[edge.token // skip] + edge.token % skip, edge.feature, edge.value)

    def _update_moments(self, feature: Tensor, value: Tensor) -> None:
        self.count.index_add_(0, feature, torch.ones_like(feature))
        self.total.index_add_(0, feature, value.double())
        self.max.scatter_reduce_(0, feature, value, reduce="amax")
        fine = self.grid.index(value)
        self.hist.index_add_(0, feature * self.grid.n_bins + fine, torch.ones_like(fine))

    def finish(self) -> FeatureStats:
        cfg = self.cfg
        count = self.count.cpu().numpy()
        n = max(self.n_tokens, 1)
        mean = np.where(count > 0, self.total.cpu().numpy() / np.maximum(count, 1), 0.0)
        lo, hi, hist_count = self._histograms()
        max_act = self.max.cpu().numpy()
        top, quantiles = select_examples(self.log.arrays(), self.edge_log.arrays(), max_act, cfg.n_examples,
                                         cfg.n_quantiles, cfg.window, self.ctx_len, cfg.seed)
        cooc_ids, cooc_jac = self.cooc.top_jaccard(count, cfg.n_cooc) if self.cooc is not None else (None, None)
        return FeatureStats(
            n_tokens=self.n_tokens, count=count, density=count / n, mean_act=mean, max_act=max_act,
            hist_lo=lo, hist_hi=hi, hist_count=hist_count, top=top, quantiles=quantiles,
            cooc_ids=cooc_ids, cooc_jaccard=cooc_jac)

    def _histograms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fine counts rebinned per feature, a block of features at a time (bounded temporaries)."""
        fine = self.hist.view(self.d_sae, -1)
        parts = [self.grid.rebin(fine[i:i + REBIN_BLOCK].cpu().numpy(), self.cfg.hist_bins)
                 for i in range(0, self.d_sae, REBIN_BLOCK)]
        del fine
        self.hist = torch.zeros(0, dtype=torch.long)  # released before the log is read (270 MB at 65,536 features)
        return tuple(np.concatenate(p) for p in zip(*parts))
