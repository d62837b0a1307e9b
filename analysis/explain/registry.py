"""The explainers and scorers `sparsescope explain` knows: one table each, which feeds the CLI help and the checks.

To add an explainer: a class with a `name` and `explain(evidence) -> Explanation` (it may raise ExplainFailed for
one feature: that feature is reported failed and the run goes on), and one entry in EXPLAINERS. To add a scorer:
a class with `name`, `metrics`, `headline` and `score(explanation, evidence) -> Score`, and one entry in SCORERS;
`needs_rule` scorers apply the explanation's machine-readable rule, so they only take explainers that give one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

from store.errors import InputError

if TYPE_CHECKING:
    from analysis.explain.evidence import FeatureEvidence


@dataclass(frozen=True)
class Explanation:
    text: str
    """One short sentence."""
    rule: dict | None = None
    """The same explanation as a rule a scorer can apply (JSON-serialisable), or None for text only."""


@dataclass(frozen=True)
class Score:
    values: dict[str, float | None]
    """metric -> value (None where undefined, e.g. precision with no predicted positive)."""
    n_examples: int
    """Windows scored, activating and non-activating."""


class ExplainFailed(Exception):
    """An explainer could not explain one feature (say, a malformed reply): it is skipped and reported."""


class Explainer(Protocol):
    name: str

    def explain(self, evidence: FeatureEvidence) -> Explanation: ...


class Scorer(Protocol):
    name: str
    metrics: tuple[str, ...]
    headline: str
    """The metric the run's summary shows."""

    def score(self, explanation: Explanation, evidence: FeatureEvidence) -> Score: ...


@dataclass(frozen=True)
class Entry:
    description: str
    """One line for the CLI help and the UI."""
    build: Callable[[], object]
    """Makes the explainer or scorer (imports its module when called)."""
    rule: bool = False
    """Explainers: gives a machine-readable rule. Scorers: needs one."""


def _patterns():
    from analysis.explain.patterns import PatternsExplainer

    return PatternsExplainer()


def _detection():
    from analysis.explain.scorers import Detection

    return Detection()


def _simulation():
    from analysis.explain.scorers import Simulation

    return Simulation()


EXPLAINERS: dict[str, Entry] = {
    "patterns": Entry("the tokens the feature fires on and the tokens before them, with the share of its firing "
                      "they cover (no language model)", _patterns, rule=True),
}
SCORERS: dict[str, Entry] = {
    "detection": Entry("held-out activating windows mixed with as many non-activating ones, classified by whether "
                       "the explanation's rule matches in them: accuracy, precision, recall, F1, balanced accuracy",
                       _detection, rule=True),
    "simulation": Entry("per-token prediction from the explanation's rule (1 where it matches), Pearson "
                        "correlation with the real activations on held-out windows", _simulation, rule=True),
}
DEFAULT_EXPLAINER = "patterns"
DEFAULT_SCORERS = ("detection", "simulation")


def explainer(name: str) -> Explainer:
    if name not in EXPLAINERS:
        raise InputError(f"unknown explainer {name!r}; choose one of {', '.join(EXPLAINERS)}")
    return EXPLAINERS[name].build()


def scorer(name: str) -> Scorer:
    if name not in SCORERS:
        raise InputError(f"unknown scorer {name!r}; choose from {', '.join(SCORERS)}")
    return SCORERS[name].build()


def check_names(explainer_name: str, scorer_names: tuple[str, ...]) -> None:
    """InputError for an unknown name, no scorer, or a rule scorer given an explainer without rules."""
    if explainer_name not in EXPLAINERS:
        raise InputError(f"unknown explainer {explainer_name!r}; choose one of {', '.join(EXPLAINERS)}")
    unknown = [s for s in scorer_names if s not in SCORERS]
    if unknown:
        raise InputError(f"unknown scorer {unknown[0]!r}; choose from {', '.join(SCORERS)}")
    if not scorer_names:
        raise InputError(f"give at least one scorer: {', '.join(SCORERS)}")
    if not EXPLAINERS[explainer_name].rule:
        ruled = [s for s in scorer_names if SCORERS[s].rule]
        if ruled:
            raise InputError(f"scorer {ruled[0]!r} applies a rule, which explainer {explainer_name!r} does not give")
