"""Steering lab: edit a model's activations with dictionary features, codes or raw directions while it
generates, next to the unsteered text, and measure what changed.

    run = SteerRun(model, config, dictionaries)    # validates and binds; raises InputError on bad input
    for step in run.stream(): ...                  # both arms grow one token per step (for the UI)
    result = run.result                            # texts, token ids, measures, notes

`steer(...)` does the same in one call; `sweep(...)` runs one intervention at several strengths.
Dictionaries come from `analysis.steering.runs.load_dictionaries` (workspace) or are built directly with
`SteerDictionary(name, sae, ...)`.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Mapping, Sequence

from analysis.steering.config import Intervention, SteerConfig, Trigger
from analysis.steering.generate import GenStep, Sampling, check_context, generate_stream, prompt_tokens
from analysis.steering.hooks import Bound, HookState, Numbers, bind, build_hooks
from analysis.steering.measures import measure_default, measure_steered, merge
from analysis.steering.targets import SteerDictionary
from store.errors import InputError

ARMS = ("default", "steered")

__all__ = ["ARMS", "GenStep", "Intervention", "Numbers", "SteerConfig", "SteerDictionary", "SteerResult",
           "SteerRun", "SweepPoint", "Trigger", "steer", "sweep"]


@dataclass
class SteerResult:
    config: SteerConfig
    numbers: list[Numbers]
    """What each intervention's strength meant (stored, so a re-run edits identically)."""
    prompt_len: int
    """Prompt tokens as the model saw them (chat template included)."""
    default_texts: list[str]
    steered_texts: list[str]
    default_ids: list[list[int]]
    steered_ids: list[list[int]]
    measures: dict
    seconds: float
    """Generation and measurement time."""
    run_id: int | None = None
    """Row in steering_runs once stored."""

    @property
    def notes(self) -> list[str]:
        return [f"{spec.label}: {n.note}" for spec, n in zip(self.config.interventions, self.numbers) if n.note]


@dataclass
class SteerRun:
    """One steering run, validated and bound at construction (nothing is generated or stored yet)."""

    model: object
    config: SteerConfig
    dictionaries: Mapping[str, SteerDictionary]
    numbers: Sequence[Numbers] | None = None
    """Pinned numbers (a re-run); None derives them."""
    arms: tuple[str, ...] = ARMS
    measured: bool = True
    """Compute the measures after generating (benchmarks switch this off)."""
    result: SteerResult | None = field(default=None, init=False)

    def __post_init__(self):
        unknown = set(self.arms) - set(ARMS)
        if unknown or not self.arms:
            raise ValueError(f"arms must be some of {ARMS} (got {self.arms})")
        self.prompt = prompt_tokens(self.model, self.config.prompt, self.config.chat)
        check_context(self.model, int(self.prompt.shape[0]), self.config.max_new_tokens)
        self.bound: list[Bound] = bind(self.model, self.config, self.dictionaries, self.prompt, self.numbers)
        self.state = HookState(prompt_len=int(self.prompt.shape[0]))
        self.hooks = build_hooks(self.model, self.bound, self.state)

    def stream(self) -> Iterator[GenStep]:
        """Yield after every generated token; afterwards `result` holds the finished run."""
        started = time.perf_counter()
        cfg = self.config
        sampling = Sampling(cfg.temperature, cfg.top_p, cfg.seed)
        arms = {name: (self.state if name == "steered" else None) for name in self.arms}
        last = None
        with contextlib.closing(generate_stream(self.model, self.prompt, cfg.samples, sampling, cfg.max_new_tokens,
                                                arms, self.hooks)) as steps:
            for last in steps:
                yield last
        default_ids, steered_ids = last.ids.get("default", []), last.ids.get("steered", [])
        self.result = SteerResult(cfg, [b.numbers for b in self.bound], int(self.prompt.shape[0]),
                                  last.texts.get("default", []), last.texts.get("steered", []),
                                  default_ids, steered_ids, self._measures(default_ids, steered_ids),
                                  time.perf_counter() - started)

    def _measures(self, default_ids, steered_ids) -> dict:
        if not self.measured:
            return {}
        steered = (measure_steered(self.model, self.bound, self.hooks, self.state, self.prompt, steered_ids)
                   if steered_ids else None)
        default = measure_default(self.model, self.bound, self.prompt, default_ids) if default_ids else None
        return merge(steered, default) if steered is not None else (default or {})

    def run(self, on_step: Callable[[GenStep], None] | None = None) -> SteerResult:
        # closing: when on_step raises, the stream's hooks come off the model now, not when it is collected
        with contextlib.closing(self.stream()) as steps:
            for step in steps:
                if on_step is not None:
                    on_step(step)
        return self.result


def steer(model, config: SteerConfig, dictionaries: Mapping[str, SteerDictionary],
          numbers: Sequence[Numbers] | None = None, on_step: Callable[[GenStep], None] | None = None) -> SteerResult:
    """Generate the default and the steered continuations side by side and measure the difference."""
    return SteerRun(model, config, dictionaries, numbers).run(on_step)


@dataclass(frozen=True)
class SweepPoint:
    strength: float
    target_mean: float
    """The target feature's mean activation on the steered continuation (no intervention when read)."""
    target_max: float
    perplexity: float
    """Of the steered continuation under the unsteered model."""
    kl_mean: float
    result: SteerResult


def _with_strength(config: SteerConfig, index: int, strength: float) -> SteerConfig:
    edited = list(config.interventions)
    edited[index] = replace(edited[index], strength=float(strength))
    return replace(config, interventions=tuple(edited))


def sweep(model, config: SteerConfig, dictionaries: Mapping[str, SteerDictionary], strengths: Sequence[float],
          index: int = 0, on_point: Callable[[SweepPoint], None] | None = None) -> list[SweepPoint]:
    """Run intervention `index` of `config` at each strength; the default arm is generated once.

    Each point is a complete SteerResult (default texts shared), so each can be stored and re-run.
    """
    if not config.interventions or not 0 <= index < len(config.interventions):
        raise InputError("a sweep needs the intervention to vary")
    if not strengths:
        raise InputError("a sweep needs at least one strength")
    if config.interventions[index].mode == "cap":
        raise InputError("a sweep varies the strength, which cap does not use (it caps at --value)")
    configs = [_with_strength(config, index, s) for s in strengths]  # validates every strength first
    baseline = SteerRun(model, configs[0], dictionaries, arms=("default",))
    default = baseline.run()
    label = baseline.bound[index].target.label
    points = []
    for strength, cfg in zip(strengths, configs):
        result = SteerRun(model, cfg, dictionaries, numbers=default.numbers, arms=("steered",)).run()
        result.default_texts, result.default_ids = default.default_texts, default.default_ids
        result.measures = merge(result.measures, default.measures)
        target = next(t for t in result.measures["targets"] if t["label"] == label)["steered"]
        point = SweepPoint(float(strength), target["mean"], target["max"], result.measures["perplexity_steered"],
                           result.measures["kl_mean"], result)
        points.append(point)
        if on_point is not None:
            on_point(point)
    return points
