"""Top examples and quantile-band samples of every feature, drawn from the firing log once the pass is over.

With the whole pass in the log (analysis.features.firing_log) and each feature's final max known, both are exact
selections, not streaming approximations:
- top-N: the N firings with the highest activation (ties: the earlier token);
- band b of a feature with max M holds its firings in (b/Q, (b+1)/Q] x M; its sample is the N firings of the band
  with the smallest hash keys (analysis.features.streaming.hash_keys; ties: the earlier token). Keys do not
  depend on activations, so the sample is uniform within the band, and it is full (N, or every firing of a
  band that has fewer).
Only the kept examples get a window: the feature's activations on the W tokens around the example, read back
from the log (0 where the feature does not fire; positions left out of the statistics, such as the attention
sink, come from a second log that holds only them).

Each selection ranks a feature's firings (in token order, so ties go to the earlier token) with
analysis.features.ranking.smallest_per_group.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from analysis.features.firing_log import LogArrays
from analysis.features.ranking import smallest_per_group, stable_argsort
from analysis.features.streaming import feature_keys, token_hash


@dataclass
class ExampleArrays:
    """Stored examples, shape [d_sae, *slots]; a slot is empty where context_id == -1."""

    activation: np.ndarray
    context_id: np.ndarray
    position: np.ndarray
    window_start: np.ndarray
    windows: np.ndarray
    """[n_filled, W] activations of the feature on each filled slot's window (slots in C order, as
    np.nonzero(context_id >= 0) lists them); NaN past the context's end."""

    @property
    def window(self) -> np.ndarray:
        """[d_sae, *slots, W], NaN in empty slots: a dense view for small dictionaries and checks (it takes
        d_sae x slots x W floats; `windows` is what scales)."""
        out = np.full((*self.context_id.shape, self.windows.shape[-1]), np.nan, dtype=np.float32)
        out[self.context_id >= 0] = self.windows
        return out


def _value_score(value: np.ndarray) -> np.ndarray:
    """int64 that sorts positive float32 activations in descending order (their bit patterns are monotone)."""
    return 0x7FFFFFFF - value.astype(np.float32).view(np.int32).astype(np.int64)


def band_index(value: np.ndarray, max_act: np.ndarray, n_bands: int) -> np.ndarray:
    """analysis.features.bands.band_of on numpy arrays (the same float64 arithmetic)."""
    ratio = value.astype(np.float64) * n_bands / max_act.astype(np.float64)
    return np.clip(np.ceil(ratio).astype(np.int64) - 1, 0, n_bands - 1)


def sample_keys(token: np.ndarray, feature: np.ndarray, ctx_len: int, seed: int) -> np.ndarray:
    """hash_keys of each firing (from its global token id)."""
    t = torch.from_numpy(token)
    token_h = token_hash(t // ctx_len, t % ctx_len, seed)
    return feature_keys(token_h, torch.from_numpy(feature.astype(np.int64))).numpy()


def select_examples(kept: LogArrays, edge: LogArrays, max_act: np.ndarray, n: int, n_bands: int, half: int,
                    ctx_len: int | None, seed: int) -> tuple[ExampleArrays, ExampleArrays]:
    """(top [d_sae, n], quantile bands [d_sae, n_bands, n]) from the log of the kept positions `kept` and the
    log of the left-out positions `edge` (windows only)."""
    d_sae = len(max_act)
    ctx_len = ctx_len or 1  # None: nothing was fed, the log is empty
    order = kept.by_feature()  # (feature, token): ties below go to the earlier token
    picks = LogArrays(kept.token[order], kept.feature[order], kept.value[order])
    feature = picks.feature  # int32, like every per-firing array below but the keys: the log's size matters here
    top, top_rank = smallest_per_group(feature, _value_score(picks.value), n)
    band = band_index(picks.value, max_act[feature], n_bands).astype(np.int32)
    keys = sample_keys(picks.token, feature, ctx_len, seed)
    picked = [smallest_per_group(feature[in_band], keys[in_band], n) + (in_band,)
              for in_band in (np.flatnonzero(band == b) for b in range(n_bands))]
    del keys
    # C order of [d_sae, Q, n] slots: by feature, then band, then rank
    sample = np.concatenate([in_band[i] for i, _, in_band in picked])
    sample_rank = np.concatenate([r for _, r, _ in picked])
    by_slot = stable_argsort((feature[sample].astype(np.int64) * n_bands + band[sample]) * n + sample_rank)
    sample, sample_rank = sample[by_slot], sample_rank[by_slot]
    windows = WindowReader(kept, edge, ctx_len, half)
    return (_fill(picks, top, (feature[top], top_rank), (d_sae, n), windows),
            _fill(picks, sample, (feature[sample], band[sample], sample_rank), (d_sae, n_bands, n), windows))


def _fill(kept: LogArrays, idx: np.ndarray, slot: tuple, shape: tuple, windows: WindowReader) -> ExampleArrays:
    """Dense slot arrays of the selected entries `idx`; `slot` gives each one's index in `shape`, in C order."""
    ctx_len = windows.ctx_len
    token = kept.token[idx]
    out = ExampleArrays(activation=np.zeros(shape, np.float32), context_id=np.full(shape, -1, np.int32),
                        position=np.full(shape, -1, np.int32), window_start=np.zeros(shape, np.int32),
                        windows=np.zeros((0, windows.width), np.float32))
    out.activation[slot] = kept.value[idx]
    out.context_id[slot] = token // ctx_len
    out.position[slot] = token % ctx_len
    start, out.windows = windows.read(token, kept.feature[idx])
    out.window_start[slot] = start
    return out


class WindowReader:
    """A feature's activations on the window around given firings, looked up in feature-major copies of the logs."""

    def __init__(self, kept: LogArrays, edge: LogArrays, ctx_len: int, half: int):
        self.ctx_len, self.half, self.width = ctx_len, half, 2 * half + 1
        last = max([int(log.token.max()) for log in (kept, edge) if len(log)] or [0])
        self.stride = last + 1 + self.width  # feature f's tokens map to f * stride + token, never overlapping
        self.logs = [self._by_feature(log) for log in (kept, edge) if len(log)]

    def _by_feature(self, log: LogArrays) -> tuple[np.ndarray, np.ndarray]:
        order = log.by_feature()
        return log.feature[order].astype(np.int64) * self.stride + log.token[order], log.value[order]

    def read(self, token: np.ndarray, feature: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(window start position [m], activations [m, W]) around firings (token [m], feature [m]).

        The window is shifted to stay inside the context (an example near the start still shows W tokens);
        where the context is shorter than W, the tail is NaN.
        """
        ctx_len, width = self.ctx_len, self.width
        pos = token % ctx_len
        start = np.clip(pos - self.half, 0, max(ctx_len - width, 0))
        first = feature.astype(np.int64) * self.stride + token - pos + start  # key of the window's first token
        out = np.zeros((len(token), width), np.float32)
        for keys, values in self.logs:
            lo, hi = np.searchsorted(keys, first), np.searchsorted(keys, first + width)
            count = hi - lo
            which = np.repeat(np.arange(len(token)), count)
            entry = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(int(count.sum()))
            out[which, keys[entry] - first[which]] = values[entry]
        if ctx_len < width:
            out[:, ctx_len:] = math.nan  # start is 0 then, so column c is position c
        return start.astype(np.int32), out
