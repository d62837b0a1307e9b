"""`sparsescope explain`: explain and score the features of an analysed dictionary, a batch at a time, resumably.

Each batch of features is read in one query, explained, scored (with the baseline), and written in one short
transaction. A feature counts as done when it has an explanation by the explainer and rows of every requested
scorer: a rerun skips those (unless `force`), so a killed run continues where it stopped. The batches are cut
from the features not done yet, in feature order, so a rerun after a kill builds the very batches the killed run
had left, and ends with the rows of an uninterrupted run. A stored explanation of a feature that only lacks a
score is scored as it is, not written again.

Baseline: within a batch, every feature is also scored with the explanation of another feature of the batch (a
seeded derangement), on its own held-out windows; that score is stored beside the real one.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import duckdb
import numpy as np

from analysis.explain.evidence import EvidenceReader, FeatureEvidence
from analysis.explain.registry import (
    DEFAULT_EXPLAINER,
    DEFAULT_SCORERS,
    ExplainFailed,
    Explanation,
    Scorer,
    check_names,
    explainer,
    scorer,
)
from store import dictionaries as dict_repo
from store.db import borrow
from store.errors import InputError
from store.explanations import (
    ExplanationRow,
    ScoreRow,
    ScoreSummary,
    done_features,
    get_explanations,
    score_summary,
    write_batch,
)

BATCH = 256
"""Features read, explained, scored and written together."""
_SPEC = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_features(spec: str) -> tuple[int, ...]:
    """Feature ids from `1,5,9-20` (ranges inclusive), sorted and unique."""
    ids: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        match = _SPEC.match(part)
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise InputError(f"--features takes feature ids and ranges such as 1,5,9-20, got {spec!r}")
        lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
        ids.update(range(lo, hi + 1))
    return tuple(sorted(ids))


@dataclass(frozen=True)
class ExplainRequest:
    dictionary: str
    """An analysed dictionary."""
    features: tuple[int, ...] | None = None
    """Feature ids; None: every live feature (one that fired in the analysis)."""
    explainer: str = DEFAULT_EXPLAINER
    """A name of EXPLAINERS."""
    scorers: tuple[str, ...] = DEFAULT_SCORERS
    """Names of SCORERS."""
    sample: int | None = None
    """Explain this many features drawn at random (with `seed`) from the chosen ones."""
    seed: int = 0
    """Seed of the sample, the non-activating windows and the baseline's pairing."""
    force: bool = False
    """Explain and score again features already done."""
    batch: int = BATCH
    """Features per batch (and per write)."""

    def check(self) -> None:
        """InputError for anything malformed that needs no store."""
        check_names(self.explainer, self.scorers)
        if self.sample is not None and self.sample < 1:
            raise InputError(f"--sample must be at least 1 (got {self.sample})")
        if self.batch < 1:
            raise InputError(f"--batch must be at least 1 (got {self.batch})")


@dataclass
class Plan:
    features: list[int]
    """The live features chosen, sorted."""
    todo: list[int]
    """Those not done yet (all with `force`)."""
    dead: int = 0
    """Chosen features that never fired in the analysis (left out)."""


def plan(con: duckdb.DuckDBPyConnection, req: ExplainRequest) -> Plan:
    """Which features to explain; InputError for an unknown or unanalysed dictionary or a feature out of range."""
    req.check()
    analysed = con.execute("SELECT count(*) FROM analyses WHERE dictionary = ?", [req.dictionary]).fetchone()[0]
    if not analysed:
        dict_repo.require_dictionary(con, req.dictionary)  # unknown: raises with the known names
        raise InputError(f"dictionary {req.dictionary!r} has not been analysed yet; "
                         f"run `sparsescope analyze {req.dictionary}` first")
    rows = con.execute("SELECT feature, count FROM features WHERE dictionary = ? ORDER BY feature",
                       [req.dictionary]).fetchall()
    n = rows[-1][0] + 1 if rows else 0
    live = [f for f, count in rows if count > 0]
    if req.features is not None:
        outside = [f for f in req.features if not 0 <= f < n]
        if outside:
            raise InputError(f"feature {outside[0]} is out of range: {req.dictionary} has features 0..{n - 1}")
        alive = set(live)
        chosen = [f for f in req.features if f in alive]
        dead = len(req.features) - len(chosen)
    else:
        chosen, dead = live, 0
    if req.sample is not None and req.sample < len(chosen):
        chosen = sorted(np.random.default_rng(req.seed).choice(chosen, req.sample, replace=False).tolist())
    done = set() if req.force else done_features(con, req.dictionary, req.explainer, req.scorers)
    return Plan(chosen, [f for f in chosen if f not in done], dead)


@dataclass
class ExplainResult:
    dictionary: str
    explainer: str
    plan: Plan
    explained: int = 0
    """Features explained in this run (not counting stored explanations that were only scored)."""
    failed: list[int] = field(default_factory=list)
    seconds: float = 0.0
    summaries: dict[str, tuple[str, ScoreSummary]] = field(default_factory=dict)
    """scorer -> (its headline metric, that metric over every chosen feature)."""


def derangement(features: Sequence[int], seed: int) -> dict[int, int]:
    """feature -> another feature of `features` (a seeded shuffle, each one paired with the next); empty for one."""
    if len(features) < 2:
        return {}
    order = np.random.default_rng([seed, int(min(features))]).permutation(sorted(features)).tolist()
    return {f: order[(i + 1) % len(order)] for i, f in enumerate(order)}


def score_batch(evidence: dict[int, FeatureEvidence], explanations: dict[int, Explanation],
                scorers: Sequence[Scorer], seed: int) -> list[ScoreRow]:
    """Every scorer's metrics of every explained feature, each beside its baseline."""
    partner = derangement(list(explanations), seed)
    rows = []
    for feature, explanation in explanations.items():
        for s in scorers:
            own = s.score(explanation, evidence[feature])
            other = s.score(explanations[partner[feature]], evidence[feature]) if feature in partner else None
            rows += [ScoreRow(feature, s.name, metric, own.values[metric],
                              None if other is None else other.values[metric], own.n_examples)
                     for metric in s.metrics]
    return rows


def run_explain(store: duckdb.DuckDBPyConnection | str | Path, req: ExplainRequest,
                progress: bool = False) -> ExplainResult:
    """Explain and score the chosen features of `req.dictionary`, writing each batch as it is done.

    `store`: an open connection (tests), or the store's path: then it is opened only for each batch's read and
    each batch's write, so other processes can use it in between.
    """
    from tqdm.auto import tqdm

    start = time.monotonic()
    with borrow(store) as con:
        work = plan(con, req)
        reader = EvidenceReader(con, req.dictionary, req.seed)
    explain_with, scorers = explainer(req.explainer), [scorer(name) for name in req.scorers]
    result = ExplainResult(req.dictionary, req.explainer, work)
    bar = tqdm(total=len(work.todo), unit="feature", desc=f"explain {req.dictionary}", disable=not progress)
    for lo in range(0, len(work.todo), req.batch):
        batch = work.todo[lo:lo + req.batch]
        with borrow(store, read_only=True) as con:
            evidence = reader.read(con, batch)
            stored = {} if req.force else {e.feature: Explanation(e.text, e.rule) for e in
                                           get_explanations(con, req.dictionary, req.explainer, batch)}
        fresh: dict[int, Explanation] = {}
        for feature in batch:
            if feature in stored:
                continue
            try:
                fresh[feature] = explain_with.explain(evidence[feature])
            except ExplainFailed:
                result.failed.append(feature)
        explained = {f: stored.get(f) or fresh[f] for f in batch if f in stored or f in fresh}
        rows = score_batch(evidence, explained, scorers, req.seed)
        with borrow(store) as con:
            write_batch(con, req.dictionary, req.explainer,
                        [ExplanationRow(f, req.explainer, e.text, e.rule) for f, e in fresh.items()],
                        rows, req.scorers, list(explained))
        result.explained += len(fresh)
        bar.update(len(batch))
    bar.close()
    with borrow(store, read_only=True) as con:
        for name in req.scorers:
            metric = scorer(name).headline
            result.summaries[name] = (metric, score_summary(con, req.dictionary, req.explainer, name, metric,
                                                            work.features))
    result.seconds = time.monotonic() - start
    return result

