"""Uniform samples of firings per (feature, activation band), in one pass although the max is unknown.

Band b of a feature with final max M holds activations in (b/Q, (b+1)/Q] x M. Mid-stream M is provisional,
so samples are kept on a finer, fixed grid of cells and assigned to bands at the end:

- Each firing carries a hash key that does not depend on its activation. Cell c of a feature covers
  (c w, (c+1) w] and keeps every firing whose key is below a threshold tau_c, at most `cap` of them (tau_c is
  the smallest key that did not fit): a bottom-k sample.
- The grid starts with Q * S cells up to the first max seen (w = M / (Q S)) and holds 2 Q S cells. When the
  max outgrows it, w doubles and pairs of whole cells merge (tau = the smaller of the two), which keeps
  "cell = every firing in it with key < tau_c" true. Whole cells merge, so no threshold is ever inherited
  by a part of a cell; that is what kept earlier designs (bands that follow the running max) from filling.
- At the end, band b takes tau_b = the smallest tau_c of the cells it touches and keeps its firings with key
  below it: exactly the band's firings with the smallest keys, a uniform sample of the band (selection
  depends on the hash only). It holds fewer than N when a cell straddling a band edge is much denser than
  the band, since that cell's small tau applies to the whole band.

Memory: d_sae * 2 Q S * cap slots of (4 W + 32) bytes.

Measured on synthetic TopK activations (bench/analyze_update.py band_fill, 512 features, 30-300 batches of
2048 tokens), share of the band slots filled out of min(N, firings in the band): S = 4, cap = N/2 (the
defaults): 93%, 92%; S = 2, cap = N/2: 73%, 72%. An earlier design whose bands followed the running max
(re-assigning samples at every new max) filled 95% after 30 batches but decayed to 92% at 300 and kept
decaying, because each re-assignment can pass a dense band's small threshold to its neighbour; fixed cells
do not decay with corpus length. Synthetic TopK activations pile up just above the TopK cut-off, which is
the hard case; on ReLU-like activations the band-following design filled 97-99%.
"""
from __future__ import annotations

import torch
from torch import Tensor

from analysis.features.slots import Candidates, SlotTable
from analysis.features.streaming import INT64_MAX, KEY_BITS, feature_keys, rank_within_groups


def band_of(value: Tensor, max_act: Tensor, n_bands: int) -> Tensor:
    """Band index of each activation: b such that b/Q < value / max <= (b+1)/Q (float64 to match tests)."""
    ratio = value.double() * n_bands / max_act.double()
    return (torch.ceil(ratio).long() - 1).clamp(0, n_bands - 1)


class BandSampler:
    """Threshold samples of firings on a per-feature dyadic grid of cells; table rows are feature * C + cell."""

    def __init__(self, d_sae: int, n_bands: int, cells_per_band: int, cap: int, window: int, seed: int,
                 device: str | torch.device):
        self.n_cells = 2 * n_bands * cells_per_band
        if d_sae * self.n_cells >= 2 ** (63 - KEY_BITS):
            raise ValueError(f"d_sae * cells must be below {2 ** (63 - KEY_BITS)}")
        self.d_sae, self.n_bands, self.cells_per_band, self.seed = d_sae, n_bands, cells_per_band, seed
        self.table = SlotTable(d_sae * self.n_cells, cap, window, score_bits=KEY_BITS, device=device)
        self.tau = torch.full((d_sae * self.n_cells,), INT64_MAX, dtype=torch.long, device=device)
        self.width = torch.zeros(d_sae, dtype=torch.float64, device=device)
        """Cell width per feature (0 until the feature first fires)."""

    def cell_of(self, value: Tensor, feature: Tensor) -> Tensor:
        return (torch.ceil(value.double() / self.width[feature]).long() - 1).clamp(0, self.n_cells - 1)

    def update(self, feature: Tensor, value: Tensor, ctx: Tensor, position: Tensor, token_h: Tensor,
               new_max: Tensor, windows) -> None:
        """Offer one batch's firings; `token_h` is each firing's `token_hash`, `new_max` [d_sae] already
        includes this batch."""
        fresh = (self.width == 0) & (new_max > 0)
        self.width[fresh] = new_max[fresh].double() / (self.n_bands * self.cells_per_band)
        over = ((self.width > 0) & (new_max.double() > self.width * self.n_cells)).nonzero(as_tuple=True)[0]
        if over.numel():
            ratio = new_max[over].double() / (self.width[over] * self.n_cells)
            self._coarsen(over, torch.ceil(torch.log2(ratio)).long().clamp(min=1), new_max[over].double())
        group = feature * self.n_cells + self.cell_of(value, feature)
        key = feature_keys(token_h, feature)
        idx = (key < self.tau[group]).nonzero(as_tuple=True)[0]
        self._insert(Candidates(group=group[idx], score=key[idx], value=value[idx], context_id=ctx[idx],
                                position=position[idx], windows=lambda j: windows(idx[j])))

    def _insert(self, c: Candidates) -> None:
        groups, kth = self.table.merge(c)
        self.tau[groups] = torch.minimum(self.tau[groups], kth)

    def _coarsen(self, features: Tensor, doublings: Tensor, seen_max: Tensor) -> None:
        """Double the cell width of `features` `doublings` times: cell c merges into cell c >> doublings."""
        n, cap = self.n_cells, self.table.cap
        short = self.width[features] * 2.0 ** doublings.double() * n < seen_max
        doublings = doublings + short.long()  # guards against log2 rounding down
        cells = torch.arange(n, device=features.device)
        target = cells[None, :] >> doublings[:, None]  # [f, C] new cell of each old cell
        rows = (features[:, None] * n + cells).reshape(-1)
        old_tau = self.tau[rows].view(-1, n)
        new_tau = torch.full_like(old_tau, INT64_MAX).scatter_reduce_(1, target, old_tau, reduce="amin")
        score = self.table.score[rows].view(-1, n, cap)
        valid = score < INT64_MAX
        survive = valid & (score < new_tau.gather(1, target)[..., None])
        move = survive & (target != cells[None, :])[..., None]
        flat = rows.view(-1, n, 1) * cap + torch.arange(cap, device=features.device)  # [f, C, cap]
        new_group = (features[:, None] * n + target)[..., None].expand_as(move)
        movers = self.table.extract(flat[move], new_group[move])
        self.table.clear(flat[valid & ~survive])
        self.table.refresh_worst(rows)
        self.tau[rows] = new_tau.reshape(-1)
        self.width[features] *= 2.0 ** doublings.double()
        self._insert(movers)

    def finish(self, max_act: Tensor, n_out: int) -> dict[str, Tensor]:
        """Each band's n_out firings with the smallest keys below its threshold: fields [d_sae, Q, n_out]."""
        q, n_cells, cap = self.n_bands, self.n_cells, self.table.cap
        t = self.table
        slot = (t.score < INT64_MAX).view(-1).nonzero(as_tuple=True)[0]
        feature = slot // (n_cells * cap)
        value = t.value.view(-1)[slot]
        band = band_of(value, max_act[feature], q)
        tau = self._band_tau(max_act)  # [d_sae, Q]
        key = t.score.view(-1)[slot]
        keep = (key < tau[feature, band]).nonzero(as_tuple=True)[0]
        slot, group, key = slot[keep], feature[keep] * q + band[keep], key[keep]
        order, rank = rank_within_groups(group, key, KEY_BITS)
        order, rank = order[rank < n_out], rank[rank < n_out]
        dest = group[order] * n_out + rank
        src = slot[order]
        out = {}
        for name, fill in (("value", 0.0), ("context_id", -1), ("position", -1), ("window_start", 0)):
            field = getattr(t, name).view(-1)
            out[name] = torch.full((self.d_sae * q * n_out,), fill, dtype=field.dtype, device=field.device)
            out[name][dest] = field[src]
        width = t.window.shape[-1]
        out["window"] = torch.full((self.d_sae * q * n_out, width), float("nan"), device=t.window.device)
        out["window"][dest] = t.window.view(-1, width)[src].float()
        return {name: v.view(self.d_sae, q, n_out, *v.shape[1:]) for name, v in out.items()}

    def _band_tau(self, max_act: Tensor) -> Tensor:
        """Smallest cell threshold among the cells each band touches. [d_sae, Q]"""
        q, n = self.n_bands, self.n_cells
        edges = torch.arange(q + 1, device=max_act.device, dtype=torch.float64)
        scaled = edges[None, :] * max_act.double()[:, None] / q / self.width.clamp(min=1e-300)[:, None]
        lo = torch.floor(scaled[:, :-1]).long().clamp(0, n - 1)  # band b is (edge b, edge b+1]
        hi = torch.maximum((torch.ceil(scaled[:, 1:]).long() - 1).clamp(0, n - 1), lo)
        cell_tau = self.tau.view(self.d_sae, n)
        tau = torch.full((self.d_sae, q), INT64_MAX, dtype=torch.long, device=max_act.device)
        for step in range(int((hi - lo).max()) + 1):
            tau = torch.minimum(tau, cell_tau.gather(1, torch.minimum(lo + step, hi)))
        return tau
