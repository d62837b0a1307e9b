"""Explanations of features and their scores: writing a batch, reading them back (for reports too), importing
them from a report, searching them by words.

`sparsescope explain` writes a batch of features per short transaction (`write_batch`), so a killed run keeps
every finished batch and a rerun skips them (`done_features`). A user's label lives in `feature_labels` and is
only read here (search), never written.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import duckdb
import pyarrow as pa

from store.db import transaction


@dataclass(frozen=True)
class ExplanationRow:
    feature: int
    explainer: str
    text: str
    rule: dict | None = None
    """The explanation as a rule a scorer can apply (JSON-serialisable); None for text only."""


@dataclass(frozen=True)
class ScoreRow:
    feature: int
    scorer: str
    metric: str
    value: float | None
    """The metric of the feature's own explanation on its held-out examples (None where undefined)."""
    baseline: float | None
    """The same metric of another feature's explanation on the same examples."""
    n_examples: int


@dataclass(frozen=True)
class ScoreSummary:
    """One metric over many features."""

    n: int
    mean: float | None
    std: float | None
    baseline_mean: float | None


@dataclass(frozen=True)
class SearchResult:
    dictionary: str
    feature: int
    score: float
    """Query words found (label or explanation), plus less than one for where and how they were found."""
    label: str
    explanation: str | None
    explainer: str | None


_EXPLANATIONS = pa.schema([("feature", pa.int32()), ("explainer", pa.string()), ("text", pa.string()),
                           ("rule", pa.string())])
_SCORES = pa.schema([("feature", pa.int32()), ("scorer", pa.string()), ("metric", pa.string()),
                     ("value", pa.float64()), ("baseline", pa.float64()), ("n_examples", pa.int32())])


def write_batch(con: duckdb.DuckDBPyConnection, dictionary: str, explainer: str,
                explanations: Sequence[ExplanationRow], scores: Sequence[ScoreRow],
                scorers: Sequence[str], scored: Sequence[int]) -> None:
    """In one transaction: put `explanations` in (replacing the same explainer's of those features), then replace
    the `scorers`' rows of the `scored` features by `scores`."""
    rows = pa.Table.from_pylist([{"feature": e.feature, "explainer": e.explainer, "text": e.text,
                                  "rule": None if e.rule is None else json.dumps(e.rule)} for e in explanations],
                                schema=_EXPLANATIONS)
    score_rows = pa.Table.from_pylist([vars(s) for s in scores], schema=_SCORES)
    with transaction(con, "explain"):
        con.register("_explanations", rows)
        con.register("_scores", score_rows)
        try:
            con.execute("INSERT OR REPLACE INTO explanations (dictionary, feature, explainer, text, rule, created) "
                        "SELECT ?, feature, explainer, text, rule::JSON, current_timestamp FROM _explanations",
                        [dictionary])
            con.execute("DELETE FROM explanation_scores WHERE dictionary = ? AND explainer = ? "
                        "AND scorer IN (SELECT unnest(?::VARCHAR[])) AND feature IN (SELECT unnest(?::INTEGER[]))",
                        [dictionary, explainer, list(scorers), [int(f) for f in scored]])
            con.execute("INSERT INTO explanation_scores (dictionary, feature, explainer, scorer, metric, value, "
                        "baseline, n_examples) SELECT ?, feature, ?, scorer, metric, value, baseline, n_examples "
                        "FROM _scores", [dictionary, explainer])
        finally:
            con.unregister("_explanations")
            con.unregister("_scores")


def done_features(con: duckdb.DuckDBPyConnection, dictionary: str, explainer: str,
                  scorers: Sequence[str]) -> set[int]:
    """Features that have an explanation by `explainer` and a score row of every one of `scorers`."""
    rows = con.execute(
        "SELECT e.feature FROM explanations e WHERE e.dictionary = ? AND e.explainer = ? AND "
        "(SELECT count(DISTINCT s.scorer) FROM explanation_scores s WHERE s.dictionary = e.dictionary "
        " AND s.feature = e.feature AND s.explainer = e.explainer AND s.scorer IN (SELECT unnest(?::VARCHAR[]))) = ?",
        [dictionary, explainer, list(scorers), len(set(scorers))]).fetchall()
    return {r[0] for r in rows}


def get_explanations(con: duckdb.DuckDBPyConnection, dictionary: str, explainer: str | None = None,
                     features: Sequence[int] | None = None) -> list[ExplanationRow]:
    """Stored explanations of a dictionary (of one explainer, of some features), by feature then explainer."""
    rows = con.execute(
        "SELECT feature, explainer, text, rule FROM explanations WHERE dictionary = ? "
        "AND (?::VARCHAR IS NULL OR explainer = ?) "
        "AND (?::INTEGER[] IS NULL OR feature IN (SELECT unnest(?::INTEGER[]))) ORDER BY feature, explainer",
        [dictionary, explainer, explainer, _ints(features), _ints(features)]).fetchall()
    return [ExplanationRow(f, e, t, None if r is None else json.loads(r)) for f, e, t, r in rows]


def get_scores(con: duckdb.DuckDBPyConnection, dictionary: str, feature: int,
               explainer: str | None = None) -> dict[str, list[ScoreRow]]:
    """explainer -> the score rows of one feature's explanation by it, by scorer and metric."""
    rows = con.execute(
        "SELECT explainer, feature, scorer, metric, value, baseline, n_examples FROM explanation_scores "
        "WHERE dictionary = ? AND feature = ? AND (?::VARCHAR IS NULL OR explainer = ?) "
        "ORDER BY explainer, scorer, metric", [dictionary, int(feature), explainer, explainer]).fetchall()
    out: dict[str, list[ScoreRow]] = {}
    for name, *rest in rows:
        out.setdefault(name, []).append(ScoreRow(*rest))
    return out


def score_summary(con: duckdb.DuckDBPyConnection, dictionary: str, explainer: str, scorer: str, metric: str,
                  features: Sequence[int] | None = None) -> ScoreSummary:
    """Mean and spread (population standard deviation) of a metric over features (all scored ones by default),
    and the mean of its baseline."""
    row = con.execute(
        "SELECT count(value), avg(value), stddev_pop(value), avg(baseline) FROM explanation_scores "
        "WHERE dictionary = ? AND explainer = ? AND scorer = ? AND metric = ? "
        "AND (?::INTEGER[] IS NULL OR feature IN (SELECT unnest(?::INTEGER[])))",
        [dictionary, explainer, scorer, metric, _ints(features), _ints(features)]).fetchone()
    return ScoreSummary(*row)


def score_kinds(con: duckdb.DuckDBPyConnection, dictionary: str) -> list[tuple[str, str, str]]:
    """(explainer, scorer, metric) of every score stored for a dictionary, sorted."""
    return [tuple(r) for r in con.execute(
        "SELECT DISTINCT explainer, scorer, metric FROM explanation_scores WHERE dictionary = ? "
        "ORDER BY explainer, scorer, metric", [dictionary]).fetchall()]


@dataclass(frozen=True)
class ScoredPage:
    rows: list[ScoreRow]
    """One page of features by one metric, best first (or worst first)."""
    total: int
    """Features with a value of the metric at least the minimum."""


def scored_features(con: duckdb.DuckDBPyConnection, dictionary: str, explainer: str, scorer: str, metric: str,
                    min_value: float | None = None, descending: bool = True, limit: int = 50,
                    offset: int = 0) -> ScoredPage:
    """Features of a dictionary ordered by one metric of one explainer's explanations (ties by feature id),
    those whose value is undefined left out, and only those at least `min_value` when given."""
    where = ("WHERE dictionary = ? AND explainer = ? AND scorer = ? AND metric = ? AND value IS NOT NULL "
             "AND (?::DOUBLE IS NULL OR value >= ?)")
    args = [dictionary, explainer, scorer, metric, min_value, min_value]
    order = "value DESC" if descending else "value ASC"
    rows = con.execute(f"SELECT feature, scorer, metric, value, baseline, n_examples FROM explanation_scores {where} "
                       f"ORDER BY {order}, feature LIMIT ? OFFSET ?", [*args, int(limit), int(offset)]).fetchall()
    total = con.execute(f"SELECT count(*) FROM explanation_scores {where}", args).fetchone()[0]
    return ScoredPage([ScoreRow(*r) for r in rows], total)


@dataclass(frozen=True)
class Explained:
    """One explanation of a feature with every score of it: what reports and exports show."""

    feature: int
    explainer: str
    text: str
    scores: tuple[ScoreRow, ...] = ()
    """By scorer, then metric."""


def explanations_of(con: duckdb.DuckDBPyConnection, dictionary: str,
                    features: Sequence[int]) -> dict[int, list[Explained]]:
    """feature -> its explanations (by explainer) with their scores, for many features in two queries; features
    without an explanation are left out."""
    ids = _ints(features) or []
    if not ids:
        return {}
    scores: dict[tuple[int, str], list[ScoreRow]] = {}
    for feature, explainer, *rest in con.execute(
            "SELECT feature, explainer, scorer, metric, value, baseline, n_examples FROM explanation_scores "
            "WHERE dictionary = ? AND feature IN (SELECT unnest(?::INTEGER[])) ORDER BY feature, explainer, scorer, "
            "metric", [dictionary, ids]).fetchall():
        scores.setdefault((feature, explainer), []).append(ScoreRow(feature, *rest))
    out: dict[int, list[Explained]] = {}
    for row in get_explanations(con, dictionary, features=ids):
        out.setdefault(row.feature, []).append(
            Explained(row.feature, row.explainer, row.text, tuple(scores.get((row.feature, row.explainer), ()))))
    return out


def import_explanations(con: duckdb.DuckDBPyConnection, dictionary: str, items: Sequence[Explained]) -> int:
    """Put explanations from elsewhere (a report) in, in one transaction: each replaces the same explainer's
    explanation of its feature and all of that explanation's scores; every other explanation stays. They come as
    text only (no rule), as a report carries them. Returns how many were written."""
    rows = pa.Table.from_pylist([{"feature": e.feature, "explainer": e.explainer, "text": e.text, "rule": None}
                                 for e in items], schema=_EXPLANATIONS)
    score_rows = pa.Table.from_pylist([{**vars(s), "explainer": e.explainer} for e in items for s in e.scores],
                                      schema=_SCORES.append(pa.field("explainer", pa.string())))
    with transaction(con):
        con.register("_explanations", rows)
        con.register("_scores", score_rows)
        try:
            con.execute("DELETE FROM explanation_scores s WHERE dictionary = ? AND EXISTS (SELECT 1 FROM _explanations "
                        "e WHERE e.feature = s.feature AND e.explainer = s.explainer)", [dictionary])
            con.execute("INSERT OR REPLACE INTO explanations (dictionary, feature, explainer, text, rule, created) "
                        "SELECT ?, feature, explainer, text, NULL, current_timestamp FROM _explanations", [dictionary])
            con.execute("INSERT INTO explanation_scores (dictionary, feature, explainer, scorer, metric, value, "
                        "baseline, n_examples) SELECT ?, feature, explainer, scorer, metric, value, baseline, "
                        "n_examples FROM _scores", [dictionary])
        finally:
            con.unregister("_explanations")
            con.unregister("_scores")
    return len(items)


def _ints(values: Sequence[int] | None) -> list[int] | None:
    return None if values is None else [int(v) for v in values]


MAX_WORDS = 8
"""Query words used by search_explanations (the rest are ignored)."""

# Per query word: is it in the label or notes, in the explanation, and as a whole word. The SQL's shape depends only
# on the number of words; every word is bound with `?`.
_SEARCH_DOCS = """
WITH docs AS (
    SELECT coalesce(e.dictionary, l.dictionary) AS dictionary, coalesce(e.feature, l.feature) AS feature,
           e.explainer, e.text, coalesce(l.label, '') AS label,
           lower(coalesce(e.text, '')) AS et, lower(coalesce(l.label, '') || ' ' || coalesce(l.notes, '')) AS lt
    FROM explanations e FULL OUTER JOIN feature_labels l ON l.dictionary = e.dictionary AND l.feature = e.feature
    WHERE {dictionary}::VARCHAR IS NULL OR coalesce(e.dictionary, l.dictionary) = {dictionary}
), hits AS (
    SELECT dictionary, feature, explainer, text, label, {matched} AS matched, {in_label} AS in_label,
           {whole} AS whole
    FROM docs WHERE {any}
)
SELECT dictionary, feature, matched + (in_label + whole / 2) / (2.0 * {n_words}) AS score, label, text,
       explainer
FROM hits
QUALIFY row_number() OVER (PARTITION BY dictionary, feature ORDER BY score DESC, explainer) = 1
ORDER BY score DESC, dictionary, feature LIMIT {limit}"""


def _search_sql(n: int) -> str:
    either = [f"(contains(lt, ${i}) OR contains(et, ${i}))" for i in range(1, n + 1)]
    return _SEARCH_DOCS.format(
        matched=" + ".join(f"{e}::INTEGER" for e in either),
        in_label=" + ".join(f"contains(lt, ${i})::INTEGER" for i in range(1, n + 1)),
        whole=" + ".join(f"coalesce(regexp_matches(lt || ' ' || et, '\\b' || regexp_escape(${i}) || '\\b'), false)"
                         "::INTEGER" for i in range(1, n + 1)),
        any=" OR ".join(either), n_words=f"${n + 1}", limit=f"${n + 2}", dictionary=f"${n + 3}")


def search_explanations(con: duckdb.DuckDBPyConnection, words: str | Sequence[str],
                        limit: int = 50, dictionary: str | None = None) -> list[SearchResult]:
    """Features of every dictionary (or of `dictionary` only) whose label, notes or explanation contain the
    query's words (case ignored, taken literally), best first: more words found first; among equals, words in the
    user's label before words only in an explanation, whole words before parts of words. One row per feature (its
    best explanation)."""
    if isinstance(words, str):
        words = words.split()
    unique = list(dict.fromkeys(w.lower() for w in words if w.strip()))[:MAX_WORDS]
    if not unique or limit <= 0:
        return []
    rows = con.execute(_search_sql(len(unique)), [*unique, len(unique), int(limit), dictionary]).fetchall()
    return [SearchResult(d, f, float(s), label, text, explainer) for d, f, s, label, text, explainer in rows]
