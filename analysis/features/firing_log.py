"""Every firing of a pass, kept compactly: what the end of the pass reads to draw exact band samples, fill the
example windows and count co-occurrence, none of which can be settled while the pass runs (band edges depend on
the final max; a feature's co-firing partners need every pair of features that fire on a token).

One entry per firing, 16 bytes: the token's global id (context_id * ctx_len + position, int64), the feature
(int32) and its activation (float32). At L0 = 32 that is 0.5 KB per token (100 MB for 200k tokens), whatever
d_sae is, against the d_sae x slots x window floats that holding every candidate example's window would take.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from analysis.features.ranking import stable_argsort


@dataclass
class LogArrays:
    """The log as flat arrays sorted by (token, feature); each token's firings are one contiguous run."""

    token: np.ndarray
    """int64 global token id (context_id * ctx_len + position)."""
    feature: np.ndarray
    """int32."""
    value: np.ndarray
    """float32 activation (> 0)."""
    _by_feature: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.token)

    def by_feature(self) -> np.ndarray:
        """Entry indices in (feature, token) order (one sort, kept for the other readers)."""
        if self._by_feature is None:
            self._by_feature = stable_argsort(self.feature)
        return self._by_feature


def _empty() -> LogArrays:
    return LogArrays(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))


class FiringLog:
    """Appended batch by batch on the host (firings only: a batch of 2048 tokens at L0 = 32 moves 1 MB)."""

    def __init__(self, d_sae: int):
        self.d_sae = d_sae
        self._chunks: list[LogArrays] = []
        self._sorted = True
        self._last_key = -1

    def __len__(self) -> int:
        return sum(len(c) for c in self._chunks)

    @property
    def nbytes(self) -> int:
        return 16 * len(self)

    def append(self, token, feature, value) -> None:
        """Add firings sorted by (token, feature) (the order of `find_firings`); tensors or numpy arrays."""
        chunk = LogArrays(_host(token, np.int64), _host(feature, np.int32), _host(value, np.float32))
        if len(chunk) == 0:
            return
        key = chunk.token * self.d_sae + chunk.feature
        # batches normally arrive in corpus order; anything else is sorted once in `arrays`
        self._sorted = self._sorted and key[0] > self._last_key and bool(np.all(key[1:] > key[:-1]))
        self._last_key = max(self._last_key, int(key[-1]))
        self._chunks.append(chunk)

    def extend(self, other: LogArrays) -> None:
        self.append(other.token, other.feature, other.value)

    def arrays(self) -> LogArrays:
        """Every entry so far, sorted by (token, feature); the chunks are merged into one (kept for later calls)."""
        if not self._chunks:
            return _empty()
        if len(self._chunks) > 1 or not self._sorted:
            merged = LogArrays(*(np.concatenate([getattr(c, f) for c in self._chunks])
                                 for f in ("token", "feature", "value")))
            if not self._sorted:
                order = np.argsort(merged.token * self.d_sae + merged.feature, kind="stable")
                merged = LogArrays(merged.token[order], merged.feature[order], merged.value[order])
            self._chunks, self._sorted = [merged], True
        return self._chunks[0]


def _host(x, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=dtype)
