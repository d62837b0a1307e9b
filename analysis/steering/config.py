"""What a steering run asks for: interventions on features or raw directions, and how to generate.

A SteerConfig is plain data: it round-trips through JSON (the `steering_runs.config` column), so a stored run
can be re-run exactly. Validation raises ValueError; the engine turns it into a one-line InputError.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Literal, get_args

from sae.models import DEFAULT_MODEL, check_text

Mode = Literal["add", "clamp", "ablate", "orthogonal", "cap"]
Positions = Literal["all", "prompt", "generated"]
MODES: tuple[str, ...] = get_args(Mode)
POSITIONS: tuple[str, ...] = get_args(Positions)
MAX_SAMPLES = 64
MAX_NEW_TOKENS = 4096


def _finite(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number (got {value!r})")


def _count(name: str, value, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer between {lo} and {hi} (got {value!r})")


@dataclass(frozen=True)
class Trigger:
    """Gate for a conditional intervention: a dictionary feature that must fire above a threshold."""

    dictionary: str
    """Dictionary of the trigger feature; its hook must run no later than the intervention's hook."""
    feature: int
    """Trigger feature id."""
    threshold: float = 0.0
    """The intervention applies only where the trigger's activation (raw units, as on its feature page,
    read before any edit at that hook) is strictly above this."""

    def __post_init__(self):
        if not self.dictionary:
            raise ValueError("a trigger needs a dictionary")
        _count("trigger feature", self.feature, 0, 2**31 - 1)
        _finite("trigger threshold", self.threshold)


@dataclass(frozen=True)
class Intervention:
    """One edit of the hooked activation, on a dictionary feature or on a raw direction."""

    mode: Mode
    """add: strength x unit direction; clamp: set the feature to a value with the reconstruction error kept;
    ablate: clamp to zero (codebook: take the code out of the chosen set). The two geometric modes act on the
    component of x along the unit direction d (a feature's decoder row, a code, a raw vector): orthogonal
    keeps the orthogonal part and scales that component by `strength`, x' = x + (strength - 1)(x.d)d;
    cap limits it from above at `value`, x' = x - max(0, x.d - value) d."""
    dictionary: str | None = None
    """Dictionary of the feature (with `feature`); None for a raw direction."""
    feature: int | None = None
    """Feature id in `dictionary`."""
    direction: tuple[float, ...] | None = None
    """Raw direction [d_in] at `hook` (a user vector, or a decoder row copied out); None for a feature."""
    hook: str | None = None
    """Hook of a raw direction (a feature uses its dictionary's hook)."""
    strength: float = 1.0
    """add: in units of the feature's typical max activation (store's max_act when the dictionary is
    analysed); raw directions: multiples of the vector as given. clamp without `value`: value = strength x
    max activation. orthogonal: the factor on the component along the direction (1 leaves x as it is, 0
    removes the component, -1 reflects it). cap: unused."""
    value: float | None = None
    """clamp: the feature's value in raw activation units (None: from strength). cap: the most the projection
    on the unit direction may be, raw units (required)."""
    positions: Positions = "all"
    """Where to edit: every position, prompt tokens only, or generated tokens only (by the position of the
    activation: the first generated token is predicted from the last prompt position)."""
    trigger: Trigger | None = None
    """Conditional steering: edit only where this feature fires above its threshold."""
    scale: float | None = None
    """Activation units per unit of strength; None derives it (max_act x decoder norm, or an estimate)."""

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)} (got {self.mode!r})")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {', '.join(POSITIONS)} (got {self.positions!r})")
        has_feature = self.dictionary is not None or self.feature is not None
        if has_feature == (self.direction is not None):
            raise ValueError("an intervention targets either a dictionary feature or a raw direction")
        if has_feature:
            if not self.dictionary:
                raise ValueError("a feature needs its dictionary (DICT:ID)")
            _count("feature", self.feature, 0, 2**31 - 1)
        else:
            if not self.hook:
                raise ValueError("a raw direction needs the hook it is added at")
            if not self.direction or any(not math.isfinite(v) for v in self.direction):
                raise ValueError("a raw direction must be a non-empty vector of finite numbers")
            if not any(self.direction):
                raise ValueError("a raw direction must not be all zeros")
        _finite("strength", self.strength)
        _finite("value", self.value, allow_none=True)
        _finite("scale", self.scale, allow_none=True)
        if self.mode == "cap" and self.value is None:
            raise ValueError("cap needs a value: the most the projection on the direction may be (--value)")
        if self.scale is not None and self.scale <= 0:
            raise ValueError(f"scale must be positive (got {self.scale})")

    @property
    def label(self) -> str:
        return f"{self.dictionary}:{self.feature}" if self.dictionary else f"direction@{self.hook}"


@dataclass(frozen=True)
class SteerConfig:
    """Everything a steering run needs besides the model and dictionaries themselves."""

    prompt: str
    """User text (wrapped in the chat template unless `chat` is off)."""
    interventions: tuple[Intervention, ...] = ()
    """Applied in order at each hook; none at all generates the default text twice."""
    model: str = DEFAULT_MODEL
    chat: bool = True
    """Wrap the prompt in the model's chat template (off: raw completion)."""
    max_new_tokens: int = 40
    samples: int = 1
    """Continuations per arm, generated as one batch."""
    seed: int = 0
    """Seeds sampling; the default and steered arms draw the same random numbers."""
    temperature: float = 0.7
    """0 is greedy decoding."""
    top_p: float = 0.9
    """Nucleus sampling mass (1: the whole distribution)."""

    def __post_init__(self):
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("the prompt is empty")
        check_text(self.prompt)
        if not isinstance(self.interventions, tuple):
            object.__setattr__(self, "interventions", tuple(self.interventions))
        _count("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        _count("samples", self.samples, 1, MAX_SAMPLES)
        _count("seed", self.seed, 0, 2**63 - 1)
        _finite("temperature", self.temperature)
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (got {self.temperature})")
        _finite("top_p", self.top_p)
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (got {self.top_p})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SteerConfig":
        """Inverse of to_dict; unknown keys are an error (a stored run from a newer version)."""
        data = dict(data)
        _known(cls, data)
        data["interventions"] = tuple(_intervention(d) for d in data.get("interventions", ()))
        return cls(**data)


def _known(cls, data: dict) -> None:
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")


def _intervention(data: dict) -> Intervention:
    data = dict(data)
    _known(Intervention, data)
    if data.get("direction") is not None:
        data["direction"] = tuple(float(v) for v in data["direction"])
    if data.get("trigger") is not None:
        _known(Trigger, data["trigger"])
        data["trigger"] = Trigger(**data["trigger"])
    return Intervention(**data)
