"""Steer by words: the features whose explanations and labels match a description, proposed with strengths from
their activation statistics, and how far the steered text came to carry them.

    proposal = propose(con, "python code", top=3)                 # store reads only: no torch, no model
    specs = interventions(proposal)                               # Intervention records for a SteerConfig
    result = steer(model, SteerConfig(prompt, specs, ...), dictionaries)       # analysis.steering.lab
    effect = described_effect(result, proposal)                   # mean activation: default vs steered text

Matching: the description's words (function words such as "the" or "and" left out unless nothing else is left)
go to `store.explanations.search_explanations`, the ranking the search box uses: more words found first; among
equals, words in the user's label (or notes) before words only in an explanation, whole words before parts of
words. A labelled feature and an explained one that match alike are both proposed, the labelled one first.
Features that never fired (features.max_act missing or 0) are left out: their strength would mean nothing.
Without a dictionary named, the best match's dictionary is used and only its features are proposed (one
dictionary: one model, one hook family).

Strengths (the rule): each feature is added at `strength` x (its match score / the best match's score), in units
of its max activation (features.max_act, the unit `steer --feature` uses). The best match gets the full strength
(STRENGTH, as `steer --strength`), weaker matches proportionally less; `amount` = that x max_act is the activation
added along the feature's decoder direction.
"""
from __future__ import annotations

from dataclasses import dataclass

import duckdb

from store.dictionaries import require_dictionary
from store.errors import InputError
from store.explanations import search_explanations

TOP = 3
"""Features proposed by default."""
MAX_TOP = 32
STRENGTH = 4.0
"""The best match's strength in units of its max activation (the default of `steer --strength`)."""
_CANDIDATES = 500
"""Search results read before dead features and other dictionaries are set aside."""
FUNCTION_WORDS = frozenset(
    "a an and are as at be by for from in into is it its of on or than that the their this to was were with "
    "about like text words word tokens token".split())
"""Words of a description that would match any explanation quoting such a token (dropped unless nothing else is
left: `--describe "the"` still looks for the feature of ' the')."""


@dataclass(frozen=True)
class Proposed:
    """One feature proposed for a description."""

    dictionary: str
    feature: int
    label: str
    """The user's label ("" when none)."""
    explanation: str | None
    """Its best-matching explanation (None for a feature that only has a label)."""
    explainer: str | None
    match: float
    """search_explanations' score: words found, plus less than one for where and how."""
    max_act: float
    mean_act: float
    strength: float
    """In units of max_act (Intervention.strength)."""

    @property
    def amount(self) -> float:
        """The activation the edit adds (raw units): strength x max_act."""
        return self.strength * self.max_act

    @property
    def ref(self) -> str:
        return f"{self.dictionary}:{self.feature}"


@dataclass(frozen=True)
class Proposal:
    description: str
    words: tuple[str, ...]
    """The words searched for."""
    dictionary: str
    features: tuple[Proposed, ...]


@dataclass(frozen=True)
class Effect:
    """The proposed features' activation on the continuations, read without any edit."""

    default_mean: float
    """Mean over the features of each one's mean activation on the unsteered continuation."""
    steered_mean: float
    per_feature: tuple[tuple[str, float, float], ...]
    """(DICT:ID, default mean, steered mean)."""

    @property
    def met(self) -> bool:
        """Whether the steered text carries the described features more than the unsteered one."""
        return self.steered_mean > self.default_mean


def description_words(description: str) -> tuple[str, ...]:
    words = list(dict.fromkeys(w.lower() for w in description.split()))
    content = [w for w in words if w not in FUNCTION_WORDS]
    return tuple(content or words)


def _check(con: duckdb.DuckDBPyConnection, description: str, dictionary: str | None, top: int,
           strength: float) -> None:
    if not description.strip():
        raise InputError('the description is empty: say what the steered text should be about, e.g. '
                         '--describe "python code"')
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP:
        raise InputError(f"--top must be between 1 and {MAX_TOP} (got {top!r})")
    if strength <= 0:
        raise InputError(f"--strength must be positive to steer toward a description (got {strength:g})")
    analysed = con.execute("SELECT count(*) FROM analyses WHERE dictionary = ?", [dictionary]).fetchone()[0]
    if dictionary is not None and not analysed:
        require_dictionary(con, dictionary)  # unknown: raises with the known ones
    described = con.execute(
        "SELECT (SELECT count(*) FROM explanations WHERE ?::VARCHAR IS NULL OR dictionary = ?) + "
        "(SELECT count(*) FROM feature_labels WHERE (label <> '' OR notes <> '') "
        "AND (?::VARCHAR IS NULL OR dictionary = ?))", [dictionary, dictionary] * 2).fetchone()[0]
    if not described:
        where = f"dictionary {dictionary!r}" if dictionary else "this workspace"
        raise InputError(f"{where} has no explanations or labels yet; run `sparsescope explain "
                         f"{dictionary or 'DICT'}` first")


def _stats(con: duckdb.DuckDBPyConnection, refs: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[float, float]]:
    """(dictionary, feature) -> (max_act, mean_act) of the features that fired."""
    if not refs:
        return {}
    rows = con.execute(
        "SELECT f.dictionary, f.feature, f.max_act, f.mean_act FROM features f "
        "JOIN (SELECT unnest(?::VARCHAR[]) AS dictionary, unnest(?::INTEGER[]) AS feature) r "
        "ON r.dictionary = f.dictionary AND r.feature = f.feature WHERE f.count > 0 AND f.max_act > 0",
        [[d for d, _ in refs], [f for _, f in refs]]).fetchall()
    return {(d, f): (float(mx), float(mean or 0.0)) for d, f, mx, mean in rows}


def propose(con: duckdb.DuckDBPyConnection, description: str, dictionary: str | None = None,
            top: int | None = None, strength: float | None = None) -> Proposal:
    """The `top` features (default TOP) best matching `description` (of `dictionary`, else of the best match's),
    with their strengths (see the module's rule; `strength` default STRENGTH); InputError when nothing matches."""
    top = TOP if top is None else top
    strength = STRENGTH if strength is None else strength
    _check(con, description, dictionary, top, strength)
    words = description_words(description)
    hits = search_explanations(con, words, limit=_CANDIDATES, dictionary=dictionary)
    stats = _stats(con, [(h.dictionary, h.feature) for h in hits])
    live = [h for h in hits if (h.dictionary, h.feature) in stats]
    if not live:
        where = f" in dictionary {dictionary!r}" if dictionary else ""
        raise InputError(f"no feature that fires has an explanation or label matching {description.strip()!r}"
                         f"{where}; try other words, or run `sparsescope explain {dictionary or 'DICT'}` to "
                         "explain more features")
    name = live[0].dictionary
    chosen = [h for h in live if h.dictionary == name][:top]
    best = chosen[0].score
    features = tuple(Proposed(h.dictionary, h.feature, h.label or "", h.explanation, h.explainer, h.score,
                              *stats[(h.dictionary, h.feature)], strength=strength * h.score / best)
                     for h in chosen)
    return Proposal(description.strip(), words, name, features)


def interventions(proposal: Proposal, mode: str = "add", positions: str = "all") -> tuple:
    """One Intervention per proposed feature (add, or clamp to strength x max_act); ablate would steer away, and
    orthogonal and cap only rescale or limit what is already there."""
    from analysis.steering.config import Intervention  # torch: only when a run is built

    if mode not in ("add", "clamp"):
        raise InputError("steering toward a description adds or clamps its features; use --mode add or clamp")
    return tuple(Intervention(mode, dictionary=p.dictionary, feature=p.feature, strength=p.strength,
                              positions=positions) for p in proposal.features)


def described_effect(result, proposal: Proposal) -> Effect:
    """The proposed features' mean activations on both continuations, from a SteerResult's measures."""
    targets = {t["label"]: t for t in result.measures.get("targets", [])}
    rows = []
    for p in proposal.features:
        entry = targets.get(p.ref)
        if entry is not None:
            rows.append((p.ref, float(entry.get("default", {}).get("mean", 0.0)), float(entry["steered"]["mean"])))
    if not rows:
        return Effect(0.0, 0.0, ())
    return Effect(sum(r[1] for r in rows) / len(rows), sum(r[2] for r in rows) / len(rows), tuple(rows))
