"""`sparsescope explain`: explain and score the features of an analysed dictionary, a batch at a time, resumably.

Each batch of features is read in one query, explained, scored (with the baseline), and written in one short
transaction. A feature counts as done when it has an explanation by the explainer and rows of every requested
scorer: a rerun skips those (unless `force`), so a killed run continues where it stopped. The batches are cut
from the features not done yet, in feature order, so a rerun after a kill builds the very batches the killed run
had left, and ends with the rows of an uninterrupted run. A stored explanation of a feature that only lacks a
score is scored as it is, not written again.

Baseline: within a batch, every feature is also scored with the explanation of another feature of the batch (a
seeded derangement), on its own held-out windows; that score is stored beside the real one.

Failures: an explainer or scorer that cannot handle one feature (ExplainFailed: a malformed reply of a language
model) leaves that feature, or that scorer's rows of it, out of the batch's write and lists it in `failed`; a rerun
tries it again. A language model that cannot be reached at all (chat.Unreachable) stops the run with one
InputError line saying how many batches were written before it; those stay.
"""
from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Sequence

import duckdb
import numpy as np

from analysis.explain.chat import ChatOptions, Unreachable, open_chat
from analysis.explain.evidence import EvidenceReader, FeatureEvidence
from analysis.explain.registry import (
    DEFAULT_EXPLAINER,
    EXPLAINERS,
    SCORERS,
    ExplainFailed,
    Explanation,
    Scorer,
    Tools,
    explainer,
    resolve_scorers,
    scorer,
    uses_llm,
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
    scorers: tuple[str, ...] | None = None
    """Names of SCORERS; None: the explainer's own (see registry.resolve_scorers for what is stored)."""
    sample: int | None = None
    """Explain this many features drawn at random (with `seed`) from the chosen ones."""
    seed: int = 0
    """Seed of the sample, the non-activating windows and the baseline's pairing."""
    force: bool = False
    """Explain and score again features already done."""
    batch: int = BATCH
    """Features per batch (and per write)."""
    endpoint: str | None = None
    """An OpenAI-compatible API's base URL for the language model (None: a local model)."""
    model: str | None = None
    """The endpoint's model; without an endpoint, a local model name (None: the embedded model)."""
    timeout: float = ChatOptions.timeout
    """Seconds one endpoint call may take."""

    @property
    def scorer_names(self) -> tuple[str, ...]:
        """The scorers run and stored (InputError for bad names)."""
        return resolve_scorers(self.explainer, self.scorers)

    def chat_options(self) -> ChatOptions:
        return ChatOptions(self.endpoint, self.model, self.timeout)

    def check(self) -> None:
        """InputError for anything malformed that needs no store."""
        names = self.scorer_names
        if (self.endpoint or self.model) and not uses_llm(self.explainer, names):
            users = [n for n, e in (*EXPLAINERS.items(), *SCORERS.items()) if e.llm]
            raise InputError(f"--endpoint and --model are for the language model of {', '.join(users)}; "
                             f"explainer {self.explainer!r} with {', '.join(names)} uses none")
        if self.endpoint is not None:
            if not re.match(r"^https?://[^/\s]+", self.endpoint):
                raise InputError(f"--endpoint takes an http:// or https:// URL such as http://127.0.0.1:8080/v1, "
                                 f"got {self.endpoint!r}")
            if not self.model:
                raise InputError("--endpoint needs --model NAME: the model the server serves")
        if not self.timeout > 0:
            raise InputError(f"--timeout must be more than 0 seconds (got {self.timeout:g})")
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
    done = set() if req.force else done_features(con, req.dictionary, req.explainer, req.scorer_names)
    return Plan(chosen, [f for f in chosen if f not in done], dead)


@dataclass
class ExplainResult:
    dictionary: str
    explainer: str
    plan: Plan
    explained: int = 0
    """Features explained in this run (not counting stored explanations that were only scored)."""
    failed: list[int] = field(default_factory=list)
    """Features left unexplained, or unscored by some scorer, by an ExplainFailed (a rerun tries them again)."""
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
                scorers: Sequence[Scorer], seed: int, failed: list[int] | None = None) -> list[ScoreRow]:
    """Every scorer's metrics of every explained feature, each beside its baseline. A scorer that fails on a
    feature (its own explanation or the baseline's) gives no rows of it; the feature is added to `failed`."""
    partner = derangement(list(explanations), seed)
    rows = []
    for feature, explanation in explanations.items():
        for s in scorers:
            try:
                own = s.score(explanation, evidence[feature])
                other = s.score(explanations[partner[feature]], evidence[feature]) if feature in partner else None
            except ExplainFailed:
                if failed is not None and feature not in failed:
                    failed.append(feature)
                continue
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
    names = req.scorer_names
    # one chat for the whole run, opened when a feature first needs it
    chat = functools.cache(partial(open_chat, req.chat_options()))
    tools = Tools(req.seed, chat if uses_llm(req.explainer, names) else None)
    explain_with, scorers = explainer(req.explainer, tools), [scorer(name, tools) for name in names]
    result = ExplainResult(req.dictionary, req.explainer, work)
    bar = tqdm(total=len(work.todo), unit="feature", desc=f"explain {req.dictionary}", disable=not progress)
    batches = range(0, len(work.todo), req.batch)
    for number, lo in enumerate(batches):
        try:
            _run_batch(store, req, names, reader, explain_with, scorers, work.todo[lo:lo + req.batch], result)
        except Unreachable as exc:
            bar.close()
            raise InputError(f"{exc}; stopped at batch {number + 1} of {len(batches)}: {lo:,} of "
                             f"{len(work.todo):,} features were written before it and are kept (rerun to "
                             f"continue)") from None
        bar.update(len(work.todo[lo:lo + req.batch]))
    bar.close()
    with borrow(store, read_only=True) as con:
        for name in names:
            metric = scorer(name).headline
            result.summaries[name] = (metric, score_summary(con, req.dictionary, req.explainer, name, metric,
                                                            work.features))
    result.failed.sort()
    result.seconds = time.monotonic() - start
    return result


def _run_batch(store, req: ExplainRequest, names: tuple[str, ...], reader: EvidenceReader, explain_with,
               scorers: Sequence[Scorer], batch: list[int], result: ExplainResult) -> None:
    """Read, explain, score and write one batch of features."""
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
    rows = score_batch(evidence, explained, scorers, req.seed, result.failed)
    with borrow(store) as con:
        write_batch(con, req.dictionary, req.explainer,
                    [ExplanationRow(f, req.explainer, e.text, e.rule) for f, e in fresh.items()],
                    rows, names, list(explained))
    result.explained += len(fresh)

