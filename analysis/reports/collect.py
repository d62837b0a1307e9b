"""Gather everything a report shows from the store into one `Report`, before any format is rendered.

Every renderer (HTML, Markdown, JSON, PDF) reads only the Report, so they all show the same facts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

import duckdb

from analysis.reports.extras import HeadScores, SteeringRun, head_attribution, head_scores, steering_runs
from analysis.reports.graphs import GraphEntry, graph_entries
from analysis.reports.task_evals import TaskEvalEntry, task_eval_entries
from store import dictionaries as dict_repo
from store.errors import InputError
from store.explanations import Explained, explanations_of
from store.queries import FeatureCard, feature_card

SortKey = Literal["density", "max_act", "label"]
SORT_KEYS: tuple[str, ...] = ("density", "max_act", "label")


@dataclass(frozen=True)
class ReportConfig:
    n_top: int = 10
    """Top-activating examples shown per feature (the store may hold more)."""
    n_per_band: int = 2
    """Examples shown from each activation quantile band."""
    max_features: int = 1000
    """Most features one report may hold (a report is meant to be read)."""

    def __post_init__(self):
        if self.n_top < 0 or self.n_per_band < 0 or self.max_features < 1:
            raise ValueError("n_top and n_per_band must be >= 0 and max_features >= 1")


@dataclass(frozen=True)
class Selection:
    """Which features go into a report: an explicit list, or the first `top` by a sort key."""

    features: tuple[int, ...] | None = None
    top: int = 10
    by: SortKey = "density"
    """density / max_act: highest first; label: labelled features only, in label order."""


@dataclass
class Peer:
    """A dictionary of the workspace placed on the FVU-vs-L0 plane."""

    name: str
    arch: str
    hook: str
    fvu: float
    l0: float
    ce_recovered: float | None = None


@dataclass
class DictionarySummary:
    name: str
    model: str
    hook: str
    arch: str
    d_in: int | None
    d_sae: int | None
    k: int | None
    source: str
    corpus: str
    n_tokens: int
    metrics: dict[str, float | None] = field(default_factory=dict)
    """Evaluation metrics (fvu, l0, dead, cos, ce_recovered, ...); histogram rows left out."""
    peers: list[Peer] = field(default_factory=list)
    """Every dictionary of the workspace that has both FVU and L0, this one included."""

    @property
    def has_codes(self) -> bool:
        """Whether the dictionary chooses discrete codes: its evaluation measured their usage (decided from the
        stored metrics, so rendering a report needs no torch)."""
        return "code_usage" in self.metrics

    @property
    def pareto(self) -> bool | None:
        """True when no other dictionary has both a lower FVU and a lower L0 (None without metrics)."""
        me = next((p for p in self.peers if p.name == self.name), None)
        if me is None:
            return None
        return not any(p.fvu < me.fvu and p.l0 < me.l0 for p in self.peers if p.name != self.name)


@dataclass
class FeatureEntry:
    card: FeatureCard
    head_attribution: list[tuple[str, float]] = field(default_factory=list)
    """(head, share of the pre-activation) for attention-output dictionaries (feature_heads, from analyze)."""
    steering: list[str] = field(default_factory=list)
    """Ids of the report's steering runs that target this feature."""
    explanations: list[Explained] = field(default_factory=list)
    """Its explanations in words (by explainer), each with its scores and their baselines."""


@dataclass
class Report:
    dictionary: DictionarySummary
    features: list[FeatureEntry]
    steering: list[SteeringRun] = field(default_factory=list)
    heads: HeadScores | None = None
    graphs: list[GraphEntry] = field(default_factory=list)
    """Attribution graphs attached with --graph, in the order asked."""
    task_evals: list[TaskEvalEntry] = field(default_factory=list)
    """The dictionary's stored task evaluations (`sparsescope eval-task`), each with its peers."""
    task_eval_notes: list[str] = field(default_factory=list)
    """Result files of the dictionary's folder that were skipped, and why."""
    generated: str = ""
    """UTC time the report was built, ISO 8601."""

    @property
    def feature_ids(self) -> set[int]:
        return {f.card.feature for f in self.features}


def dictionary_summary(con: duckdb.DuckDBPyConnection, name: str) -> DictionarySummary:
    """The dictionary part of a report; InputError when it is unknown or not analysed."""
    analysis = con.execute("SELECT model, corpus, n_tokens FROM analyses WHERE dictionary = ?", [name]).fetchall()
    row = dict_repo.get_dictionary(con, name)
    if row is None and not analysis:
        dict_repo.require_dictionary(con, name)  # raises with the list of known dictionaries
    if not analysis:
        raise InputError(f"dictionary {name!r} has not been analysed yet; run `sparsescope analyze {name}` first")
    model, corpus, n_tokens = analysis[0]
    metrics = {k: v for k, v in dict_repo.get_metrics(con, name).items() if "_hist:" not in k}
    summary = DictionarySummary(
        name=name, model=(row.model if row else "") or model, hook=row.hook if row else "",
        arch=row.arch if row else "", d_in=row.d_in if row else None, d_sae=row.d_sae if row else None,
        k=row.k if row else None, source=row.source if row else "", corpus=corpus, n_tokens=n_tokens,
        metrics=metrics)
    summary.peers = _peers(con)
    return summary


def _peers(con: duckdb.DuckDBPyConnection) -> list[Peer]:
    rows = con.execute("""
        SELECT d.name, d.arch, d.hook, f.value, l.value, c.value FROM dictionaries d
        JOIN dictionary_metrics f ON f.dictionary = d.name AND f.metric = 'fvu'
        JOIN dictionary_metrics l ON l.dictionary = d.name AND l.metric = 'l0'
        LEFT JOIN dictionary_metrics c ON c.dictionary = d.name AND c.metric = 'ce_recovered'
        WHERE f.value IS NOT NULL AND l.value IS NOT NULL ORDER BY d.name""").fetchall()
    return [Peer(*r) for r in rows]


def select_features(con: duckdb.DuckDBPyConnection, dictionary: str, selection: Selection,
                    cfg: ReportConfig = ReportConfig()) -> list[int]:
    """The feature ids a selection names, checked against the analysed dictionary."""
    if selection.features is not None:
        wanted = list(dict.fromkeys(int(f) for f in selection.features))
        if not wanted:
            raise InputError("no features given")
        if len(wanted) > cfg.max_features:
            raise InputError(f"at most {cfg.max_features} features per report, got {len(wanted)}")
        found = {r[0] for r in con.execute(
            "SELECT feature FROM features WHERE dictionary = ? AND feature IN (SELECT unnest(?::INTEGER[]))",
            [dictionary, wanted]).fetchall()}
        missing = [f for f in wanted if f not in found]
        if missing:
            raise InputError(f"feature(s) not in dictionary {dictionary!r}: {', '.join(map(str, missing))}")
        return wanted
    if selection.by not in SORT_KEYS:
        raise InputError(f"cannot pick features by {selection.by!r}; choose one of {', '.join(SORT_KEYS)}")
    if not 1 <= selection.top <= cfg.max_features:
        raise InputError(f"--top must be between 1 and {cfg.max_features}, got {selection.top}")
    if selection.by == "label":
        sql = ("SELECT feature FROM feature_labels WHERE dictionary = ? AND label <> '' AND feature IN "
               "(SELECT feature FROM features WHERE dictionary = ?) ORDER BY lower(label), feature LIMIT ?")
        ids = [r[0] for r in con.execute(sql, [dictionary, dictionary, selection.top]).fetchall()]
        if not ids:
            raise InputError(f"dictionary {dictionary!r} has no labelled features; pick --by density or max_act")
        return ids
    order = "density DESC" if selection.by == "density" else "max_act DESC"
    return [r[0] for r in con.execute(f"SELECT feature FROM features WHERE dictionary = ? ORDER BY {order}, "
                                      "feature LIMIT ?", [dictionary, selection.top]).fetchall()]


def _trim(card: FeatureCard, cfg: ReportConfig) -> FeatureCard:
    card.top_examples = card.top_examples[:cfg.n_top]
    per_band: dict[int | None, int] = {}
    kept = []
    for ex in card.quantile_examples:  # sorted by band, then rank: keep the first few of each band
        per_band[ex.band] = per_band.get(ex.band, 0) + 1
        if per_band[ex.band] <= cfg.n_per_band:
            kept.append(ex)
    card.quantile_examples = kept
    return card


def collect_report(con: duckdb.DuckDBPyConnection, dictionary: str, selection: Selection = Selection(),
                   steering: list[str] | None = None, heads: bool = False,
                   cfg: ReportConfig = ReportConfig(), graphs: list[str] | None = None) -> Report:
    """Everything a report on `dictionary` shows; InputError for unknown dictionaries, features, runs or graphs."""
    summary = dictionary_summary(con, dictionary)
    ids = select_features(con, dictionary, selection, cfg)
    runs = steering_runs(con, list(steering or []))
    attached = graph_entries(con, list(graphs or []))
    heads_of = head_attribution(con, dictionary, ids)
    explained = explanations_of(con, dictionary, ids)
    evals, eval_notes = task_eval_entries(con, dictionary)
    entries = []
    for feature in ids:
        entry = FeatureEntry(_trim(feature_card(con, dictionary, feature), cfg))
        entry.head_attribution = heads_of.get(feature, [])
        entry.explanations = explained.get(feature, [])
        entry.steering = [r.run_id for r in runs if (dictionary, feature) in r.targets]
        entries.append(entry)
    return Report(dictionary=summary, features=entries, steering=runs,
                  heads=head_scores(con, summary.model) if heads else None, graphs=attached,
                  task_evals=evals, task_eval_notes=eval_notes,
                  generated=datetime.now(timezone.utc).isoformat(timespec="seconds"))
