"""The explainers and scorers `sparsescope explain` knows: one table each, which feeds the CLI help and the checks.

To add an explainer: a class with a `name` and `explain(evidence) -> Explanation` (it may raise ExplainFailed for
one feature: that feature is reported failed and the run goes on), and one entry in EXPLAINERS. To add a scorer:
a class with `name`, `metrics`, `headline` and `score(explanation, evidence) -> Score` (ExplainFailed there fails
the feature for that scorer only), and one entry in SCORERS. An entry's `build` gets the run's Tools: its seed and
the language model (opened on first use), so explainers and judges of one run share one model.

Rules and judges. A `rule` scorer applies the explanation's machine-readable rule (cheap, exact); an `llm` scorer
has a language model read the explanation's text (works for any explanation). A scorer is always stored under the
name of what actually scored, so the two never mix: `detection` is the rule's detection and `detection-llm` the
judged one. Asking `detection` of an explainer without rules (`llm`) means the judged one: resolve_scorers turns a
rule scorer into its `text_twin` there (and refuses a rule scorer without one, such as `simulation`). Naming
`detection-llm` or `fuzz` directly judges any explainer's text, patterns' sentences included.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

from store.errors import InputError

if TYPE_CHECKING:
    from analysis.explain.chat import Chat
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
class Tools:
    """What an explainer or scorer is built with."""

    seed: int = 0
    """The run's seed (fuzz's markings)."""
    chat: Callable[[], Chat] | None = None
    """Gives the run's language model, opened on the first call; None where no entry of the run needs one."""


@dataclass(frozen=True)
class Entry:
    description: str
    """One line for the CLI help and the UI."""
    build: Callable[[Tools], object]
    """Makes the explainer or scorer (imports its module when called)."""
    rule: bool = False
    """Explainers: gives a machine-readable rule. Scorers: needs one."""
    llm: bool = False
    """Uses the language model (--endpoint / --model apply)."""
    text_twin: str | None = None
    """Rule scorers: the scorer that judges the same way from text, used for explainers without rules."""
    scorers: tuple[str, ...] = ()
    """Explainers: the scorers run when none are named."""


def _patterns(tools: Tools):
    from analysis.explain.patterns import PatternsExplainer

    return PatternsExplainer()


def _llm(tools: Tools):
    from analysis.explain.llm import LLMExplainer

    return LLMExplainer(tools.chat)


def _detection(tools: Tools):
    from analysis.explain.scorers import Detection

    return Detection()


def _simulation(tools: Tools):
    from analysis.explain.scorers import Simulation

    return Simulation()


def _detection_llm(tools: Tools):
    from analysis.explain.judges import DetectionJudge

    return DetectionJudge(tools.chat, tools.seed)


def _fuzz(tools: Tools):
    from analysis.explain.judges import FuzzJudge

    return FuzzJudge(tools.chat, tools.seed)


EXPLAINERS: dict[str, Entry] = {
    "patterns": Entry("the tokens the feature fires on and the tokens before them, with the share of its firing "
                      "they cover (no language model)", _patterns, rule=True, scorers=("detection", "simulation")),
    "llm": Entry("a language model reads the feature's top and band-sampled examples with the firing tokens "
                 "marked and describes it in a sentence (the embedded model, or --endpoint)", _llm, llm=True,
                 scorers=("detection-llm", "fuzz")),
}
SCORERS: dict[str, Entry] = {
    "detection": Entry("held-out activating windows mixed with as many non-activating ones, classified by whether "
                       "the explanation's rule matches in them: accuracy, precision, recall, F1, balanced accuracy",
                       _detection, rule=True, text_twin="detection-llm"),
    "simulation": Entry("per-token prediction from the explanation's rule (1 where it matches), Pearson "
                        "correlation with the real activations on held-out windows", _simulation, rule=True),
    "detection-llm": Entry("the same detection judged by the language model from the explanation's text, one "
                           "yes/no question per window (what `detection` means for explainers without rules)",
                           _detection_llm, llm=True),
    "fuzz": Entry("held-out windows with tokens marked, half of the activating ones on the wrong tokens; the "
                  "language model says whether the marking fits the explanation: the same five metrics",
                  _fuzz, llm=True),
}
DEFAULT_EXPLAINER = "patterns"
DEFAULT_SCORERS = EXPLAINERS[DEFAULT_EXPLAINER].scorers


def explainer(name: str, tools: Tools = Tools()) -> Explainer:
    if name not in EXPLAINERS:
        raise InputError(f"unknown explainer {name!r}; choose one of {', '.join(EXPLAINERS)}")
    return EXPLAINERS[name].build(tools)


def scorer(name: str, tools: Tools = Tools()) -> Scorer:
    if name not in SCORERS:
        raise InputError(f"unknown scorer {name!r}; choose from {', '.join(SCORERS)}")
    return SCORERS[name].build(tools)


def resolve_scorers(explainer_name: str, scorer_names: tuple[str, ...] | None) -> tuple[str, ...]:
    """The scorers a run uses and stores: the explainer's own for None; a rule scorer asked of an explainer
    without rules becomes its text twin (duplicates dropped, order kept). InputError as check_names."""
    names = EXPLAINERS[explainer_name].scorers if scorer_names is None and explainer_name in EXPLAINERS else \
        scorer_names or ()
    if explainer_name in EXPLAINERS and not EXPLAINERS[explainer_name].rule:
        names = tuple(SCORERS[s].text_twin if s in SCORERS and SCORERS[s].text_twin else s for s in names)
    names = tuple(dict.fromkeys(names))
    check_names(explainer_name, names)
    return names


def uses_llm(explainer_name: str, scorer_names: tuple[str, ...]) -> bool:
    return EXPLAINERS[explainer_name].llm or any(SCORERS[s].llm for s in scorer_names)


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
