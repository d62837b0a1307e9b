"""What a feature is explained from and scored on, read from the results of its dictionary's analysis.

The statistics pass stored, per feature, windows of tokens around its top firings and around firings sampled from
each activation band, with the feature's activation on every token of each window (`feature_examples`). Here they
are read for a batch of features in one query and split by context into two sets: the explainer sees the windows
of the explain set only, the scorers use the held-out set, so a score measures prediction on windows the
explanation was not built from. Non-activating windows come from random corpus contexts (see NegativePool).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import duckdb
import numpy as np
import pyarrow.compute as pc

HELDOUT_SHARE = 0.4
"""Share of the corpus' contexts whose windows are held out for scoring (the same contexts for every feature)."""
POOL_CONTEXTS = 512
"""Held-out contexts non-activating windows are cut from."""
DEFAULT_WINDOW = 17


def heldout(context_ids: np.ndarray) -> np.ndarray:
    """Whether each context is held out: a fixed hash of its id, so every run and every feature agrees."""
    mixed = (np.asarray(context_ids).astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    return (mixed >> np.uint64(40)).astype(np.float64) / 2.0 ** 24 < HELDOUT_SHARE


@dataclass(frozen=True)
class Windows:
    """Windows of tokens, flattened: window w holds tokens offsets[w]:offsets[w + 1]."""

    token_ids: np.ndarray
    """(tokens,) int64 token ids."""
    prev_ids: np.ndarray
    """(tokens,) int64 id of the token before each one in its context; -1 at a context's start."""
    acts: np.ndarray
    """(tokens,) float32 the feature's activation; zero throughout for non-activating windows."""
    offsets: np.ndarray
    """(windows + 1,) int64."""
    context_ids: np.ndarray
    """(windows,) context each window comes from."""
    starts: np.ndarray
    """(windows,) position in its context of the window's first token."""
    bands: np.ndarray
    """(windows,) -1 for a top example, else its activation band (higher is stronger); -2 non-activating."""

    @property
    def n_windows(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def window_of_token(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_windows), self.lengths)

    def positions(self) -> np.ndarray:
        """(tokens,) position of each token in its context."""
        return np.repeat(self.starts - self.offsets[:-1], self.lengths) + np.arange(len(self.token_ids))

    def select(self, keep: np.ndarray) -> "Windows":
        """The windows where `keep` (windows,) is true."""
        tokens = np.repeat(keep, self.lengths)
        offsets = np.concatenate([[0], np.cumsum(self.lengths[keep])]).astype(np.int64)
        return Windows(self.token_ids[tokens], self.prev_ids[tokens], self.acts[tokens], offsets,
                       self.context_ids[keep], self.starts[keep], self.bands[keep])

    def slice(self, lo: int, hi: int) -> "Windows":
        """Windows lo..hi-1."""
        a, b = self.offsets[lo], self.offsets[hi]
        return Windows(self.token_ids[a:b], self.prev_ids[a:b], self.acts[a:b], self.offsets[lo:hi + 1] - a,
                       self.context_ids[lo:hi], self.starts[lo:hi], self.bands[lo:hi])

    @staticmethod
    def empty() -> "Windows":
        none = np.zeros(0, np.int64)
        return Windows(none, none, np.zeros(0, np.float32), np.zeros(1, np.int64), none, none, none)


def concat(a: Windows, b: Windows) -> Windows:
    return Windows(*(np.concatenate([getattr(a, n), getattr(b, n)]) for n in ("token_ids", "prev_ids", "acts")),
                   np.concatenate([a.offsets, b.offsets[1:] + a.offsets[-1]]),
                   *(np.concatenate([getattr(a, n), getattr(b, n)]) for n in ("context_ids", "starts", "bands")))


class Vocab:
    """Token text by id and ids by text, for one model (a missing id reads `#ID`)."""

    def __init__(self, tokens: Sequence[str] | dict[int, str]):
        self._text = dict(enumerate(tokens)) if not isinstance(tokens, dict) else dict(tokens)
        self._ids: dict[str, list[int]] = {}
        for token_id, text in self._text.items():
            self._ids.setdefault(text, []).append(token_id)

    def text(self, token_id: int) -> str:
        return self._text.get(int(token_id), f"#{int(token_id)}")

    def ids(self, text: str) -> list[int]:
        """Every id whose text is `text` (tokenizers may have several); `#ID` reads as ID."""
        if text not in self._ids and text.startswith("#") and text[1:].isdigit():
            return [int(text[1:])]
        return self._ids.get(text, [])


def load_vocab(con: duckdb.DuckDBPyConnection, model: str) -> Vocab:
    return Vocab(dict(con.execute("SELECT token_id, token FROM vocab WHERE model = ?", [model]).fetchall()))


@dataclass(frozen=True)
class FeatureEvidence:
    dictionary: str
    feature: int
    explain: Windows
    """Activating windows the explainer may look at."""
    heldout: Windows
    """Activating windows of held-out contexts, for scoring."""
    negatives: Windows
    """As many windows of held-out contexts in which the feature is taken not to fire (see NegativePool)."""
    vocab: Vocab


class NegativePool:
    """Non-activating windows, cut at random places from held-out corpus contexts.

    The store keeps a feature's activations only inside its example windows, so nothing says exactly where else
    it is zero. Windows are therefore taken from contexts none of the feature's stored examples come from (its
    top examples are its strongest firings and the band samples cover the rest of its range), and are taken to be
    non-activating. A feature that fires on a fraction d of tokens still fires somewhere in a window of w tokens
    with chance about 1 - (1 - d)^w, so for dense features a few of these negatives are wrong, which lowers
    their detection precision and their baseline alike.
    """

    def __init__(self, context_ids: np.ndarray, token_ids: list[np.ndarray]):
        self.context_ids = np.asarray(context_ids, np.int64)
        self.token_ids = token_ids

    @classmethod
    def load(cls, con: duckdb.DuckDBPyConnection, corpus: str, n: int = POOL_CONTEXTS) -> "NegativePool":
        ids = np.array([r[0] for r in con.execute("SELECT context_id FROM contexts WHERE corpus = ?",
                                                  [corpus]).fetchall()], np.int64)
        ids = ids[heldout(ids)]
        order = np.argsort((ids.astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93)) >> np.uint64(16), kind="stable")
        chosen = np.sort(ids[order[:n]])
        rows = con.execute("SELECT context_id, token_ids FROM contexts WHERE corpus = ? AND context_id IN "
                           "(SELECT unnest(?::INTEGER[])) ORDER BY context_id", [corpus, chosen.tolist()]).fetchall()
        return cls(np.array([r[0] for r in rows], np.int64), [np.asarray(r[1], np.int64) for r in rows])

    def sample(self, n: int, length: int, exclude: np.ndarray, rng: np.random.Generator) -> Windows:
        """`n` windows of `length` tokens from contexts not in `exclude`, never at position 0 (the attention
        sink, which the analysis leaves out)."""
        excluded = set(exclude.tolist())
        usable = [i for i, c in enumerate(self.context_ids.tolist())
                  if c not in excluded and len(self.token_ids[i]) > 1]
        if n <= 0 or not usable:
            return Windows.empty()
        picks = rng.choice(usable, size=n, replace=len(usable) < n)
        parts = []
        for i in picks:
            tokens = self.token_ids[i]
            size = min(length, len(tokens) - 1)
            start = int(rng.integers(1, len(tokens) - size + 1))
            parts.append((self.context_ids[i], start, tokens[start:start + size], tokens[start - 1:start + size - 1]))
        ids = np.concatenate([p[2] for p in parts])
        return Windows(ids, np.concatenate([p[3] for p in parts]), np.zeros(len(ids), np.float32),
                       np.concatenate([[0], np.cumsum([len(p[2]) for p in parts])]).astype(np.int64),
                       np.array([p[0] for p in parts], np.int64), np.array([p[1] for p in parts], np.int64),
                       np.full(len(parts), -2, np.int64))


# Tokens of each window from its context: DuckDB lists are 1-based, so the window's first token, at 0-based
# position window_start, is element window_start + 1, and the token before it element window_start.
_EXAMPLES = """
SELECT e.feature, coalesce(e.band, -1) AS band, e.context_id, e.position, e.window_start, e.token_acts,
       c.token_ids[e.window_start + 1 : e.window_start + len(e.token_acts)] AS ids,
       CASE WHEN e.window_start > 0 THEN c.token_ids[e.window_start] ELSE -1 END AS before
FROM feature_examples e JOIN contexts c ON c.corpus = e.corpus AND c.context_id = e.context_id
WHERE e.dictionary = ? AND e.feature BETWEEN ? AND ? AND e.feature IN (SELECT unnest(?::INTEGER[]))
ORDER BY e.feature, e.kind DESC, e.band DESC, e.rank"""


def read_windows(con: duckdb.DuckDBPyConnection, dictionary: str,
                 features: Sequence[int]) -> tuple[np.ndarray, Windows]:
    """(feature of each window, the windows) of every stored example of `features`, in one query; a window whose
    firing position repeats one of the same feature (a band sample that is also a top example) is left out."""
    features = sorted(int(f) for f in features)
    if not features:
        return np.zeros(0, np.int64), Windows.empty()
    # Arrow straight from a relation; on a cursor, since the connection may hold a result a fetchone() left open
    cursor = con.cursor()
    try:
        table = cursor.sql(_EXAMPLES, params=[dictionary, features[0], features[-1], features]).to_arrow_table()
    finally:
        cursor.close()
    n_acts = pc.list_value_length(table["token_acts"]).to_numpy(zero_copy_only=False).astype(np.int64)
    n_ids = pc.list_value_length(table["ids"]).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    length = np.minimum(n_acts, n_ids)  # a window cut short by its context's end keeps the tokens it has
    acts = pc.list_flatten(table["token_acts"]).to_numpy(zero_copy_only=False).astype(np.float32)
    ids = pc.list_flatten(table["ids"]).to_numpy(zero_copy_only=False).astype(np.int64)
    acts = acts[_within(n_acts, length)]
    ids = ids[_within(n_ids, length)]
    offsets = np.concatenate([[0], np.cumsum(length)]).astype(np.int64)
    before = table["before"].fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    prev = np.empty_like(ids)
    prev[1:] = ids[:-1]
    starts = offsets[:-1][length > 0]
    prev[starts] = before[length > 0]
    column = {name: table[name].to_numpy(zero_copy_only=False).astype(np.int64)
              for name in ("feature", "band", "context_id", "position", "window_start")}
    windows = Windows(ids, prev, acts, offsets, column["context_id"], column["window_start"], column["band"])
    key = np.stack([column["feature"], column["context_id"], column["position"]], axis=1)
    _, first = np.unique(key, axis=0, return_index=True)
    keep = np.zeros(len(key), bool)
    keep[first] = True
    keep &= length > 0
    return column["feature"][keep], windows.select(keep)


def _within(lengths: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(sum(lengths),) whether each list element lies within the first keep[row] elements of its row."""
    index = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return index < np.repeat(keep, lengths)


class EvidenceReader:
    """Reads the evidence of batches of features of one analysed dictionary (vocabulary and pool loaded once)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, dictionary: str, seed: int = 0):
        model, corpus = con.execute("SELECT model, corpus FROM analyses WHERE dictionary = ?",
                                    [dictionary]).fetchone()
        self.dictionary, self.seed = dictionary, seed
        self.vocab = load_vocab(con, model)
        self.pool = NegativePool.load(con, corpus)

    def read(self, con: duckdb.DuckDBPyConnection, features: Sequence[int]) -> dict[int, FeatureEvidence]:
        owner, windows = read_windows(con, self.dictionary, features)
        held = heldout(windows.context_ids)
        bounds = np.searchsorted(owner, sorted(features), side="left")
        ends = np.searchsorted(owner, sorted(features), side="right")
        out = {}
        for feature, lo, hi in zip(sorted(features), bounds, ends):
            mine = windows.slice(lo, hi)
            shown, kept = mine.select(~held[lo:hi]), mine.select(held[lo:hi])
            length = int(mine.lengths.max()) if hi > lo else DEFAULT_WINDOW
            rng = np.random.default_rng([self.seed, int(feature)])
            negatives = self.pool.sample(kept.n_windows, length, mine.context_ids, rng)
            out[int(feature)] = FeatureEvidence(self.dictionary, int(feature), shown, kept, negatives, self.vocab)
        return out
