"""What the user asks for (DictSpec, the one home of arch, d_sae, k and l1) and the training dictionary for it."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import torch
from sae_lens.saes.sae import SAEMetadata, TrainingSAE
from torch import Tensor

from sae.dictionaries import registry
from sae.dictionaries.registry import Architecture
from store.errors import InputError

FEATURES_PER_INPUT = 8
"""Default d_sae: 8 features (codes) per input dimension."""


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def parse_options(arch: str, texts: Sequence[str]) -> tuple[tuple[str, Any], ...]:
    """`--option NAME=VALUE` texts as (name, value) pairs in the options' types; InputError for a text that is
    not NAME=VALUE, a name the architecture does not have, or a value of the wrong type."""
    record = registry.architecture(arch)
    known = {option.name: option for option in record.options}
    pairs = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep:
            raise InputError(f"--option takes NAME=VALUE (got {text!r})")
        option = known.get(name.strip())
        if option is None:
            raise InputError(_unknown_option(record, name.strip()))
        pairs[option.name] = option.parse(value)
    return tuple(pairs.items())


def _unknown_option(record: Architecture, name: str) -> str:
    if not record.options:
        with_options = [a.name for a in registry.ARCHITECTURES.values() if a.options]
        return f"--option does not apply to {record.name} (it is for {', '.join(with_options) or 'no architecture'})"
    return f"unknown option {name!r} for {record.name} (choose from {', '.join(o.name for o in record.options)})"


def check_options(arch: str, d_sae: int | None, k: int | None, l1: float | None,
                  options: Mapping[str, Any] | tuple = ()) -> Architecture:
    """The architecture, after checking the dictionary options a user gives; InputError with one message per bad
    value. d_sae None: not known yet (8 x d_in, once the source is known). `options`: the architecture's own
    (parsed, see parse_options), checked by its record's `check`."""
    record = registry.architecture(arch)
    if not record.trainable:
        raise InputError(registry.not_trained(record))
    if d_sae is not None and not _positive_int(d_sae):
        raise InputError(f"--d-sae must be a positive integer (got {d_sae!r})")
    if k is not None:
        with_k = [a.name for a in registry.ARCHITECTURES.values() if a.default_k is not None]
        if record.default_k is None:
            raise InputError(f"--k does not apply to {arch} (it is for {', '.join(with_k)})")
        if not _positive_int(k) or (d_sae is not None and k > d_sae):
            bound = d_sae if d_sae is not None else f"{FEATURES_PER_INPUT} x d_in"
            raise InputError(f"--k must be between 1 and --d-sae ({bound}), got {k!r}")
    if l1 is not None:
        with_l1 = [a.name for a in registry.ARCHITECTURES.values() if a.default_sparsity is not None]
        if record.default_sparsity is None:
            raise InputError(f"--l1 does not apply to {arch} (it is for {', '.join(with_l1)})")
        if isinstance(l1, bool) or not isinstance(l1, (int, float)) or not math.isfinite(l1) or l1 < 0:
            raise InputError(f"--l1 must be a non-negative number (got {l1!r})")
    given = dict(options)
    for name in given:
        if name not in {option.name for option in record.options}:
            raise InputError(_unknown_option(record, name))
    if record.check is not None:
        record.check(record.option_values(given), d_sae)
    return record


@dataclass(frozen=True)
class DictSpec:
    arch: str
    """A registered architecture name (sae.dictionaries.ARCHITECTURES)."""
    d_in: int
    """Width of the activations (n_heads * d_head for hook_z)."""
    d_sae: int
    """Number of features (atoms, codes)."""
    k: int | None = None
    """What the architecture counts with k (its k_meaning); None: its default. Only where k applies."""
    l1: float | None = None
    """Sparsity coefficient (its sparsity_meaning); None: its default. Only where one applies."""
    hook_name: str = ""
    """TransformerLens hook the activations come from (recorded in the saved dictionary)."""
    model_name: str = ""
    """Model the activations come from (recorded in the saved dictionary)."""
    hook_head_index: int | None = None
    """Single attention head the activations come from, if any."""
    options: tuple[tuple[str, Any], ...] = ()
    """The architecture's own options as (name, value) pairs (its Architecture.options); the rest: defaults."""

    def __post_init__(self):
        if not _positive_int(self.d_in):
            raise InputError(f"--d-in must be a positive integer (got {self.d_in!r})")
        check_options(self.arch, self.d_sae, self.k, self.l1, self.options)
        if self.hook_head_index is not None and self.hook_head_index < 0:
            raise InputError(f"--head must be a non-negative head index (got {self.hook_head_index})")

    @classmethod
    def with_defaults(cls, arch: str, d_in: int, d_sae: int | None = None, k: int | None = None,
                      **rest) -> DictSpec:
        """The spec to train and record: d_sae (8 x d_in), k and the options (the architecture's) filled in where
        not given. l1 stays as given (None: the default, recorded as None)."""
        spec = cls(arch, d_in, FEATURES_PER_INPUT * d_in if d_sae is None else d_sae, k, **rest)
        return replace(spec, k=spec.k_or_default, options=tuple(spec.architecture.option_values(spec.options).items()))

    @property
    def architecture(self) -> Architecture:
        return registry.architecture(self.arch)

    @property
    def k_or_default(self) -> int | None:
        return self.k if self.k is not None else self.architecture.default_k

    @property
    def sparsity_or_default(self) -> float | None:
        return self.l1 if self.l1 is not None else self.architecture.default_sparsity


def _shared_fields(spec: DictSpec, device: str | torch.device) -> dict:
    """Config fields every architecture takes."""
    metadata = SAEMetadata(model_name=spec.model_name or None, hook_name=spec.hook_name or None,
                           hook_head_index=spec.hook_head_index)
    # SAELens' convention for attention outputs: the dictionary takes [..., n_heads, d_head] and flattens it
    # head-major, so it splices into hook_z directly. Training always sees flattened rows.
    hook_z = spec.hook_name.endswith("hook_z") and spec.hook_head_index is None
    return dict(d_in=spec.d_in, d_sae=spec.d_sae, device=str(device), metadata=metadata,
                reshape_activations="hook_z" if hook_z else "none")


def build_training_sae(spec: DictSpec, device: str | torch.device = "cpu") -> TrainingSAE:
    """A freshly initialised SAELens TrainingSAE for spec (fp32; SAELens' init, tied encoder where it has one)."""
    return spec.architecture.build(spec, _shared_fields(spec, device))


@torch.no_grad()
def init_from_sample(sae: TrainingSAE, sample: Tensor) -> None:
    """Data-dependent initialisation from sample rows [n, d_in] (already scaled like the training inputs).

    The class's own `init_from_sample(rows)` where it has one (codebook: k-means); else b_dec = geometric median
    of the rows (Gao et al. 2024 for TopK; the same centring helps the others).
    """
    sample = sample.reshape(-1, sae.cfg.d_in).to(sae.W_dec.device, sae.W_dec.dtype)
    if sample.shape[0] == 0:
        raise ValueError("init_from_sample needs at least one row")
    own = getattr(sae, "init_from_sample", None)
    if own is not None:
        own(sample)
        return
    sae.b_dec.copy_(geometric_median(sample))


def geometric_median(points: Tensor, iters: int = 50, eps: float = 1e-6) -> Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances to `points` [n, d]."""
    median = points.mean(dim=0)
    for _ in range(iters):
        weights = 1 / (points - median).norm(dim=-1).clamp(min=eps)
        update = (weights[:, None] * points).sum(dim=0) / weights.sum()
        if (update - median).norm() <= eps * (1 + median.norm()):
            return update
        median = update
    return median
