"""From a SteerConfig to TransformerLens forward hooks: bind each intervention to its target and numbers,
then edit the hooked activation at the positions (and trigger firings) it asks for.

Hooks see only the positions of the current forward call; with the KV cache that is one new position per
step. HookState.offset says where the call starts, so prompt-only / generated-only stay correct.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor

from analysis.steering.config import Intervention, SteerConfig
from analysis.steering.targets import CodeTarget, DirectionTarget, SteerDictionary
from sae.models import check_hook, hook_output_dim, stop_layer
from store.errors import InputError


@dataclass(frozen=True)
class Numbers:
    """What a strength means for one intervention; stored with a run so a re-run edits identically."""

    scale: float
    """Activation units added per unit of strength (codebook: LayerNorm units, times each row's std)."""
    unit: float
    """The feature's activation per unit of strength (clamp without an explicit value)."""
    note: str = ""


@dataclass(frozen=True)
class Bound:
    """An intervention with its target, optional trigger target, and resolved numbers."""

    spec: Intervention
    target: object
    trigger: object | None
    numbers: Numbers

    @property
    def amount(self) -> float:
        return self.spec.strength * self.numbers.scale

    @property
    def value(self) -> float:
        if self.spec.mode == "ablate":
            return 0.0
        return self.spec.value if self.spec.value is not None else self.spec.strength * self.numbers.unit


@dataclass
class HookState:
    """Mutable context the hooks read: where this forward call starts and whether to steer at all."""

    prompt_len: int
    offset: int = 0
    """Absolute position of the first position in the current forward call."""
    active: bool = False
    """Hooks edit only while this is set (the default arm runs through the same hooked model)."""
    fired: dict[int, Tensor] = field(default_factory=dict)
    """Trigger masks [batch, pos] of the current call, by intervention index."""


# ------------------------------------------------------------------------------------------------ binding

def _target(model, spec: Intervention, dictionaries: Mapping[str, SteerDictionary], widths: dict):
    if spec.direction is not None:
        check_hook(model, spec.hook)
        vector = torch.tensor(spec.direction, dtype=torch.float32, device=model.cfg.device)
        target = DirectionTarget(vector, spec.hook)
    else:
        target = _dictionary(model, spec.dictionary, dictionaries).target(spec.feature)
    width = widths.setdefault(target.hook, hook_output_dim(model, target.hook))
    expected = target.vector.numel() if isinstance(target, DirectionTarget) else target.dictionary.d_in
    if expected != width:
        raise InputError(f"{target.label} has width {expected}, but {target.hook} has width {width}")
    return target


def _dictionary(model, name: str, dictionaries: Mapping[str, SteerDictionary]) -> SteerDictionary:
    if name not in dictionaries:
        known = ", ".join(sorted(dictionaries)) or "none loaded"
        raise InputError(f"unknown dictionary {name!r} (known: {known})")
    found = dictionaries[name]
    if found.model and found.model != model.cfg.model_name:
        raise InputError(f"dictionary {name!r} reads {found.model}, but this run uses {model.cfg.model_name}")
    check_hook(model, found.hook)
    return found


def _prompt_rows(model, tokens: Tensor, hooks: set[str]) -> dict[str, Tensor]:
    """[P, d_in] activations at each hook on the prompt alone (to estimate units of unanalysed features)."""
    if not hooks:
        return {}
    layers = [stop_layer(model, h) for h in hooks]
    stop = None if None in layers else max(layers)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None], names_filter=list(hooks), stop_at_layer=stop)
    return {h: cache[h][0].reshape(tokens.shape[0], -1) for h in hooks}


GEOMETRIC_NOTES = {
    "orthogonal": "orthogonal: strength {strength:g} multiplies the component along the unit direction "
                  "(1 leaves it, 0 removes it)",
    "cap": "cap: the component along the unit direction is at most {value:g} (raw units)",
}
"""Modes whose numbers do not depend on the feature's scale: strength and value are taken as given."""


def _numbers(spec: Intervention, target, prompt_rows: dict[str, Tensor]) -> Numbers:
    if spec.mode in GEOMETRIC_NOTES:
        return Numbers(1.0, 1.0, GEOMETRIC_NOTES[spec.mode].format(strength=spec.strength, value=spec.value or 0.0))
    if isinstance(target, DirectionTarget):
        return Numbers(spec.scale or target.norm, target.norm, "raw direction: strength 1 adds the vector as given")
    if isinstance(target, CodeTarget):
        return Numbers(spec.scale or target.norm / target.k, 1.0 / target.k,
                       "codebook: strength 1 adds what the code contributes when chosen; clamp forces it in")
    max_act = target.dictionary.max_acts.get(target.feature)
    if max_act is not None and max_act > 0:
        unit, note = max_act, f"strength in units of the feature's max activation {max_act:.4g} (store)"
    else:
        seen = float(target.read(prompt_rows[target.hook]).max())
        if seen > 0:
            unit, note = seen, (f"{target.dictionary.name} not analysed: strength in units of the feature's "
                                f"max activation on the prompt ({seen:.4g})")
        else:
            unit, note = 1.0, (f"{target.dictionary.name} not analysed and the feature is silent on the prompt: "
                               "strength in raw activation units (1.0)")
    if target.norm == 0:
        note += "; its decoder row is zero, so add does nothing"
    return Numbers(spec.scale or unit * target.norm, unit, note)


def _needs_estimate(spec: Intervention, target) -> bool:
    if spec.mode in GEOMETRIC_NOTES or isinstance(target, (DirectionTarget, CodeTarget)):
        return False
    return target.dictionary.max_acts.get(target.feature, 0.0) <= 0


def bind(model, config: SteerConfig, dictionaries: Mapping[str, SteerDictionary], prompt_tokens: Tensor,
         numbers: Sequence[Numbers] | None = None) -> list[Bound]:
    """Resolve every intervention of `config` (InputError for unknown dictionaries, features, hooks).

    numbers: pinned from a stored run (re-run), else derived: the store's max_act, an estimate on the
    prompt for an unanalysed dictionary, the code's own contribution, or the raw vector's norm.
    """
    if numbers is not None and len(numbers) != len(config.interventions):
        raise InputError("the stored numbers do not match the run's interventions")
    widths: dict[str, int] = {}
    targets = [_target(model, spec, dictionaries, widths) for spec in config.interventions]
    triggers = [None if spec.trigger is None else
                _dictionary(model, spec.trigger.dictionary, dictionaries).target(spec.trigger.feature)
                for spec in config.interventions]
    if numbers is None:
        hooks = {t.hook for s, t in zip(config.interventions, targets) if _needs_estimate(s, t)}
        rows = _prompt_rows(model, prompt_tokens, hooks)
        numbers = [_numbers(s, t, rows) for s, t in zip(config.interventions, targets)]
    return [Bound(s, t, g, n) for s, t, g, n in zip(config.interventions, targets, triggers, numbers)]


# ------------------------------------------------------------------------------------------------ hooks

def _position_mask(positions: str, state: HookState, batch: int, n_pos: int, device) -> Tensor:
    """[batch, n_pos] True where the activation's absolute position is one `positions` selects."""
    if positions == "all":
        return torch.ones(batch, n_pos, dtype=torch.bool, device=device)
    absolute = state.offset + torch.arange(n_pos, device=device)
    keep = absolute < state.prompt_len if positions == "prompt" else absolute >= state.prompt_len
    return keep[None].expand(batch, n_pos)


def _apply(bound: Bound, x: Tensor, mask: Tensor) -> Tensor:
    """x [batch, pos, d_in] with the edit applied to the rows under mask (others untouched, bit for bit)."""
    if not bool(mask.any()):
        return x
    rows = x[mask]  # [m, d_in]
    mode = bound.spec.mode
    if mode == "add":
        new = bound.target.add(rows, bound.amount)
    elif mode == "clamp":
        new = bound.target.clamp(rows, bound.value)
    elif mode == "orthogonal":
        new = bound.target.rescale(rows, bound.spec.strength)
    elif mode == "cap":
        new = bound.target.cap(rows, bound.spec.value)
    else:
        new = bound.target.ablate(rows)
    out = x.clone()
    out[mask] = new
    return out


def _hook_fn(triggers: list[tuple[int, Bound]], edits: list[tuple[int, Bound]], state: HookState,
             act: Tensor, hook) -> Tensor:
    if not state.active:
        return act
    batch, n_pos = act.shape[:2]
    x = act.reshape(batch, n_pos, -1)  # hook_z [b, p, h, dh] -> [b, p, h*dh], head-major
    for index, bound in triggers:  # read before any edit at this hook
        fired = bound.trigger.read(x.reshape(batch * n_pos, -1)) > bound.spec.trigger.threshold
        state.fired[index] = fired.reshape(batch, n_pos)
    for index, bound in edits:
        mask = _position_mask(bound.spec.positions, state, batch, n_pos, act.device)
        if bound.trigger is not None:
            mask = mask & state.fired[index]
        x = _apply(bound, x, mask)
    return x.reshape(act.shape)


def build_hooks(model, bound: Sequence[Bound], state: HookState) -> list[tuple[str, Callable]]:
    """One forward hook per hook point used; a trigger must be read no later than its edit happens."""
    order = {name: i for i, name in enumerate(model.hook_dict)}
    for b in bound:
        if b.trigger is not None and order[b.trigger.hook] > order[b.target.hook]:
            raise InputError(f"trigger {b.trigger.label} is read at {b.trigger.hook}, after {b.target.hook} "
                             "where the edit happens; pick a trigger at the same hook or an earlier one")
    points = {b.target.hook for b in bound} | {b.trigger.hook for b in bound if b.trigger is not None}
    hooks = []
    for point in sorted(points, key=order.__getitem__):
        triggers = [(i, b) for i, b in enumerate(bound) if b.trigger is not None and b.trigger.hook == point]
        edits = [(i, b) for i, b in enumerate(bound) if b.target.hook == point]
        hooks.append((point, partial(_hook_fn, triggers, edits, state)))
    return hooks
