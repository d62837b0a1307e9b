"""Reading feature results: one feature's page, pages of features, searches, and labels.

Every value is bound with `?`; the only text pasted into SQL is a column name picked from a fixed list.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import duckdb

from store.db import transaction
from store.errors import InputError

ORDER_COLUMNS = {
    "feature": "f.feature", "count": "f.count", "density": "f.density", "mean_act": "f.mean_act",
    "max_act": "f.max_act", "decoder_norm": "f.decoder_norm", "max_decoder_cos": "f.max_decoder_cos",
    "label": "l.label",
}
"""Columns a page of features can be sorted by (user input is looked up here, never pasted)."""


@dataclass(frozen=True)
class FeatureRow:
    feature: int
    count: int
    density: float
    mean_act: float
    max_act: float
    decoder_norm: float | None
    max_decoder_cos: float | None
    label: str | None


@dataclass(frozen=True)
class Example:
    kind: str
    """'top' or 'quantile'."""
    band: int | None
    """Quantile band b: activation in (b/Q, (b+1)/Q] x max_act; None for top examples."""
    rank: int
    corpus: str
    context_id: int
    position: int
    activation: float
    window_start: int
    token_acts: list[float]
    """The feature's activation on each token of the window, which starts at window_start."""
    tokens: list[str]
    """Text of the window's tokens (empty if the context or the vocabulary is not in the store)."""


@dataclass(frozen=True)
class Ranked:
    """One entry of a ranked side list: a token (logits), another feature (neighbours, parents) or a step."""

    rank: int
    id: int
    value: float
    text: str | None = None


@dataclass
class FeatureCard:
    dictionary: str
    feature: int
    count: int
    density: float
    mean_act: float
    max_act: float
    decoder_norm: float | None
    max_decoder_cos: float | None
    label: str
    notes: str
    corpus: str
    n_tokens: int
    histogram: list[tuple[float, float, int]] = field(default_factory=list)
    """(bin_lo, bin_hi, count) of non-zero activations, bins [lo, hi), log-spaced."""
    top_examples: list[Example] = field(default_factory=list)
    quantile_examples: list[Example] = field(default_factory=list)
    """Sorted by band (highest first), then rank."""
    promoted: list[Ranked] = field(default_factory=list)
    """Tokens whose logits the feature's decoder direction raises most."""
    suppressed: list[Ranked] = field(default_factory=list)
    decoder_neighbors: list[Ranked] = field(default_factory=list)
    cooccurring: list[Ranked] = field(default_factory=list)
    """Features firing on the same tokens, by Jaccard index."""
    mp_steps: list[Ranked] = field(default_factory=list)
    """Matching-pursuit dictionaries: (step, count) as Ranked(rank=step, id=step, value=count)."""
    mp_parents: list[Ranked] = field(default_factory=list)


# the histogram rides along as a list; its subquery takes the parameters, not f.*, so it is not correlated
_CARD_HEAD = """
SELECT f.count, f.density, f.mean_act, f.max_act, f.decoder_norm, f.max_decoder_cos,
       coalesce(l.label, ''), coalesce(l.notes, ''), a.corpus, a.n_tokens, a.model,
       (SELECT list([h.bin_lo, h.bin_hi, h.count] ORDER BY h.bin) FROM feature_histograms h
        WHERE h.dictionary = $d AND h.feature = $f)
FROM features f JOIN analyses a ON a.dictionary = f.dictionary
LEFT JOIN feature_labels l ON l.dictionary = f.dictionary AND l.feature = f.feature
WHERE f.dictionary = $d AND f.feature = $f"""

_CARD_EXAMPLES = """
SELECT e.kind, e.band, e.rank, e.corpus, e.context_id, e.position, e.activation, e.window_start,
       e.token_acts, c.token_ids[e.window_start + 1 : e.window_start + len(e.token_acts)]
FROM (SELECT * FROM feature_examples WHERE dictionary = ? AND feature = ?) e
LEFT JOIN contexts c ON c.corpus = e.corpus AND c.context_id = e.context_id
ORDER BY e.kind DESC, e.band DESC, e.rank"""

# every ranked side list of a feature in one round trip
_CARD_SIDES = """
SELECT CASE WHEN sign = 1 THEN 'promoted' ELSE 'suppressed' END, rank, token_id, value, token
  FROM feature_logits WHERE dictionary = $d AND feature = $f
UNION ALL SELECT CASE WHEN kind = 'decoder' THEN 'decoder' ELSE 'cooc' END, rank, other, score, NULL
  FROM feature_neighbors WHERE dictionary = $d AND feature = $f
UNION ALL SELECT 'steps', step, step, count, NULL FROM mp_steps WHERE dictionary = $d AND feature = $f
UNION ALL SELECT 'parents', rank, parent, count, NULL FROM mp_parents WHERE dictionary = $d AND feature = $f
ORDER BY 1, 2"""


def feature_card(con: duckdb.DuckDBPyConnection, dictionary: str, feature: int) -> FeatureCard:
    """Everything the feature page shows, in four queries (each a scan of one row group at most, since
    results are written sorted by feature)."""
    params = {"d": dictionary, "f": feature}
    head = con.execute(_CARD_HEAD, params).fetchone()
    if head is None:
        raise InputError(f"no feature {feature} in analysed dictionary {dictionary!r}")
    *stats, corpus, n_tokens, model, histogram = head
    card = FeatureCard(dictionary, feature, *stats, corpus=corpus, n_tokens=n_tokens)
    card.histogram = [(lo, hi, int(n)) for lo, hi, n in histogram or []]
    rows = con.execute(_CARD_EXAMPLES, [dictionary, feature]).fetchall()
    text = _token_texts(con, model, {t for r in rows for t in (r[9] or [])})
    for r in rows:
        example = Example(*r[:9], tokens=[text.get(t, "") for t in (r[9] or [])])
        (card.top_examples if r[0] == "top" else card.quantile_examples).append(example)
    lists = {"promoted": card.promoted, "suppressed": card.suppressed, "decoder": card.decoder_neighbors,
             "cooc": card.cooccurring, "steps": card.mp_steps, "parents": card.mp_parents}
    for part, rank, id_, value, token in con.execute(_CARD_SIDES, params).fetchall():
        lists[part].append(Ranked(rank, id_, value, token))
    return card


def _token_texts(con: duckdb.DuckDBPyConnection, model: str, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = con.execute("SELECT token_id, token FROM vocab WHERE model = ? AND token_id IN "
                       "(SELECT unnest(?::INTEGER[]))", [model, sorted(ids)]).fetchall()
    return dict(rows)


_ROWS = """
SELECT f.feature, f.count, f.density, f.mean_act, f.max_act, f.decoder_norm, f.max_decoder_cos, l.label
FROM features f LEFT JOIN feature_labels l ON l.dictionary = f.dictionary AND l.feature = f.feature
"""


def _order(order_by: str, descending: bool) -> str:
    if order_by not in ORDER_COLUMNS:
        raise InputError(f"cannot sort by {order_by!r}; choose one of {', '.join(ORDER_COLUMNS)}")
    direction = "DESC" if descending else "ASC"
    return f" ORDER BY {ORDER_COLUMNS[order_by]} {direction} NULLS LAST, f.feature LIMIT ? OFFSET ?"


def features_page(con: duckdb.DuckDBPyConnection, dictionary: str, order_by: str = "feature",
                  descending: bool = False, limit: int = 50, offset: int = 0, lo: float = 0.0,
                  hi: float = 1.0) -> list[FeatureRow]:
    """One page of a dictionary's features with their labels, sorted by a column of ORDER_COLUMNS.

    `lo`, `hi`: only features whose firing density lies in [lo, hi] (0, 0 for dead ones; 0.1, 1 for dense).
    """
    sql = _ROWS + "WHERE f.dictionary = ? AND f.density BETWEEN ? AND ?" + _order(order_by, descending)
    rows = con.execute(sql, [dictionary, float(lo), float(hi), int(limit), int(offset)]).fetchall()
    return [FeatureRow(*r) for r in rows]


def count_features(con: duckdb.DuckDBPyConnection, dictionary: str, lo: float = 0.0, hi: float = 1.0) -> int:
    """How many features of an analysed dictionary have a firing density in [lo, hi] (all by default)."""
    return con.execute("SELECT count(*) FROM features WHERE dictionary = ? AND density BETWEEN ? AND ?",
                       [dictionary, float(lo), float(hi)]).fetchone()[0]


def random_feature(con: duckdb.DuckDBPyConnection, dictionary: str) -> int | None:
    """A random feature that fires at least once (None if none does)."""
    row = con.execute("SELECT feature FROM features WHERE dictionary = ? AND count > 0 ORDER BY random() LIMIT 1",
                      [dictionary]).fetchone()
    return row[0] if row else None


@dataclass(frozen=True)
class Summary:
    """What a table that lists many features at once shows of each."""

    density: float
    max_act: float
    label: str
    top_tokens: list[str]
    """Tokens the feature promotes most, strongest first."""


_SUMMARIES = """
SELECT f.feature, f.density, f.max_act, coalesce(l.label, ''),
       (SELECT list(coalesce(g.token, '') ORDER BY g.rank) FROM feature_logits g
        WHERE g.dictionary = f.dictionary AND g.feature = f.feature AND g.sign = 1 AND g.rank < ?)
FROM features f LEFT JOIN feature_labels l ON l.dictionary = f.dictionary AND l.feature = f.feature
WHERE f.dictionary = ? AND f.feature IN (SELECT unnest(?::INTEGER[]))"""


def feature_summaries(con: duckdb.DuckDBPyConnection, dictionary: str, features: Sequence[int],
                      n_tokens: int = 3) -> dict[int, Summary]:
    """feature -> Summary (with its `n_tokens` most promoted tokens) for the listed features that exist."""
    rows = con.execute(_SUMMARIES, [int(n_tokens), dictionary, [int(f) for f in features]]).fetchall()
    return {r[0]: Summary(r[1], r[2], r[3], list(r[4] or [])) for r in rows}


@dataclass(frozen=True)
class SearchHit:
    feature: int
    score: float
    """Why it matched: examples on the token (top-token search), logit effect (logit search)."""
    density: float
    max_act: float
    label: str | None


_HIT_COLUMNS = """SELECT h.feature, h.score, f.density, f.max_act, l.label FROM hits h
JOIN features f ON f.dictionary = ? AND f.feature = h.feature
LEFT JOIN feature_labels l ON l.dictionary = f.dictionary AND l.feature = h.feature
ORDER BY h.score DESC, h.feature LIMIT ?"""

_TOP_TOKEN = """
WITH ids AS (SELECT token_id FROM vocab
             WHERE model = (SELECT model FROM analyses WHERE dictionary = ?)
               AND lower(trim(token)) = lower(trim(?))),
hits AS (SELECT feature, count(*) + max(activation) / (1 + max(activation)) AS score
         FROM feature_examples WHERE dictionary = ? AND kind = 'top'
           AND token_id IN (SELECT token_id FROM ids) GROUP BY feature)
""" + _HIT_COLUMNS

_LOGIT_TOKEN = """
WITH hits AS (SELECT feature, max(value) AS score FROM feature_logits
              WHERE dictionary = ? AND sign = 1 AND lower(trim(token)) = lower(trim(?)) GROUP BY feature)
""" + _HIT_COLUMNS


def search_by_top_token(con: duckdb.DuckDBPyConnection, dictionary: str, text: str,
                        limit: int = 50) -> list[SearchHit]:
    """Features whose top examples fire on a token reading `text` (case and surrounding spaces ignored).

    Score: number of top examples on that token, ties broken by the strongest activation among them.
    """
    rows = con.execute(_TOP_TOKEN, [dictionary, text, dictionary, dictionary, int(limit)]).fetchall()
    return [SearchHit(*r) for r in rows]


def search_by_logit_token(con: duckdb.DuckDBPyConnection, dictionary: str, text: str,
                          limit: int = 50) -> list[SearchHit]:
    """Features that promote a token reading `text` among their top logit effects, strongest first."""
    rows = con.execute(_LOGIT_TOKEN, [dictionary, text, dictionary, int(limit)]).fetchall()
    return [SearchHit(*r) for r in rows]


def search_by_label(con: duckdb.DuckDBPyConnection, dictionary: str, text: str,
                    limit: int = 50) -> list[FeatureRow]:
    """Features whose label or notes contain `text` (case-insensitive, taken literally: no wildcards)."""
    sql = _ROWS + ("WHERE f.dictionary = ? AND (contains(lower(l.label), lower(?)) OR contains(lower(l.notes), "
                   "lower(?))) ORDER BY f.feature LIMIT ?")
    rows = con.execute(sql, [dictionary, text, text, int(limit)]).fetchall()
    return [FeatureRow(*r) for r in rows]


def set_label(con: duckdb.DuckDBPyConnection, dictionary: str, feature: int, label: str,
              notes: str = "") -> None:
    """Give a feature a label and notes; they are kept when the dictionary is analysed again."""
    with transaction(con):
        exists = con.execute("SELECT count(*) FROM features WHERE dictionary = ? AND feature = ?",
                             [dictionary, feature]).fetchone()[0]
        if not exists:
            raise InputError(f"no feature {feature} in analysed dictionary {dictionary!r}")
        con.execute("INSERT OR REPLACE INTO feature_labels (dictionary, feature, label, notes, updated) "
                    "VALUES (?, ?, ?, ?, current_timestamp)", [dictionary, feature, label, notes])


@dataclass(frozen=True)
class Usage:
    """How an analysed dictionary spends its features, from the analysis' own counts."""

    used: float | None
    """Share of the features (codes) that fired at least once in the analysis."""
    perplexity: float | None
    """exp(entropy) of the firings' distribution over features: the effective number of features (codes) in use."""
    mp_steps: float | None
    """Matching pursuit: atoms chosen per analysed token (mp_steps summed over tokens); None for other dictionaries."""


_USAGE = """
WITH f AS (SELECT dictionary, count(*) AS n, count(*) FILTER (WHERE count > 0) AS used, sum(count) AS firings
           FROM features GROUP BY dictionary),
e AS (SELECT x.dictionary, -sum(x.count / f.firings * ln(x.count / f.firings)) AS entropy
      FROM features x JOIN f ON f.dictionary = x.dictionary WHERE x.count > 0 GROUP BY x.dictionary),
s AS (SELECT dictionary, sum(count) AS chosen FROM mp_steps GROUP BY dictionary)
SELECT a.dictionary, f.used / nullif(f.n, 0), exp(e.entropy), s.chosen / nullif(a.n_tokens, 0)
FROM analyses a LEFT JOIN f ON f.dictionary = a.dictionary LEFT JOIN e ON e.dictionary = a.dictionary
LEFT JOIN s ON s.dictionary = a.dictionary ORDER BY a.dictionary"""


def dictionary_usage(con: duckdb.DuckDBPyConnection) -> dict[str, Usage]:
    """Usage of every analysed dictionary, in one query (the Home page's columns)."""
    return {name: Usage(*(None if v is None else float(v) for v in values))
            for name, *values in con.execute(_USAGE).fetchall()}


def analysed_dictionaries(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, int]]:
    """(dictionary, corpus, n_tokens) of every dictionary whose analysis has finished."""
    return [tuple(r) for r in con.execute(
        "SELECT dictionary, corpus, n_tokens FROM analyses ORDER BY dictionary").fetchall()]


_NOTES = """
SELECT i.feature, l.label, f.density FROM (SELECT unnest(?::INTEGER[]) AS feature) i
LEFT JOIN feature_labels l ON l.dictionary = ? AND l.feature = i.feature
LEFT JOIN features f ON f.dictionary = ? AND f.feature = i.feature"""


def feature_notes(con: duckdb.DuckDBPyConnection, dictionary: str,
                  features: Sequence[int]) -> dict[int, tuple[str | None, float | None]]:
    """feature -> (label or None, density or None) for each listed feature: its label whether or not the
    dictionary is analysed now, its density when it is."""
    rows = con.execute(_NOTES, [[int(f) for f in features], dictionary, dictionary]).fetchall()
    return {r[0]: (r[1] or None, r[2]) for r in rows}
